"""A search shared through PostgreSQL: a throwaway server on loopback, started and removed by the test.

Four `aeopt optimize --storage postgresql://...` processes stand for four machines: each adds its trials to
the one study; in the end the study holds every trial once.
"""
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql")
TINY_SPACE = "model: [mlp]\nhidden_size: {low: 16, high: 32}\nhidden_layers: 1\nbatch_size: 128\n"
FAST = ["--epochs", "2", "--subset", "300", "--final-epochs", "1", "--max-front", "2", "--latent-dim", "4",
        "--threads", "1", "--quiet"]


def _bin(name: str) -> str | None:
    found = sorted(PG_BIN.glob(f"*/bin/{name}"))
    return str(found[-1]) if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """initdb + pg_ctl on a temporary directory, listening on 127.0.0.1 only; stopped and removed afterwards.
    PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user."""
    pytest.importorskip("psycopg")
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries are not installed (.ci/run installs Debian's postgresql)")
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
    root = Path(tempfile.mkdtemp(prefix="aeopt-pg-"))
    data, port = root / "data", _free_port()
    as_user = ["runuser", "-u", user.pw_name, "--"] if user else []
    if user:
        os.chown(root, user.pw_uid, user.pw_gid)
    try:
        subprocess.run([*as_user, initdb, "-D", str(data), "-U", "aeopt", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True, timeout=120)
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=60"
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
                       check=True, capture_output=True, timeout=120)
        subprocess.run([*as_user, _bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "aeopt",
                        "search"], check=True, capture_output=True, timeout=60)
        yield f"postgresql://aeopt@127.0.0.1:{port}/search"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True,
                       timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_four_workers_share_one_postgres_study_without_losing_or_duplicating(postgres, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, "-m", "aeopt", "optimize", "--data", "digits", "--storage", postgres,
                                 "--out", str(tmp_path / f"host{i}"), "--trials", "2", "--space", str(space), *FAST],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(4)]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-1500:] for o in outputs]
    trials = optuna.load_study(study_name="aeopt", storage=postgres).get_trials(deepcopy=False)
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(8)), numbers  # 4 x 2 trials: none lost, none twice
    assert all(t.state.is_finished() for t in trials)
    assert all(t.state == optuna.trial.TrialState.COMPLETE or "stopped" in t.user_attrs for t in trials)
