"""One CLI: every subcommand takes --quiet and --debug, every one that writes takes --overwrite and
refuses to replace an output without it."""
import argparse

import numpy as np
import pytest

from aeopt.cli import main
from aeopt.cli.main import build_parser

READ_ONLY = {"evaluate", "models"}  # print only: nothing to overwrite


def subcommands(parser=None, prefix=()):
    parser = parser or build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommands(sub, prefix + (name,))
            return
    yield " ".join(prefix), parser


def test_the_walk_finds_every_command_group():
    names = {name for name, _ in subcommands()}
    assert {"train", "lr-find", "evaluate", "reconstruct", "models", "sample", "optimize", "shrink", "export",
            "bench", "encode", "decode", "shard", "detect fit", "detect score", "compress",
            "decompress"} <= names


@pytest.mark.parametrize("name", [name for name, _ in subcommands()])
def test_every_subcommand_shows_the_shared_flags_in_its_help(name, capsys):
    with pytest.raises(SystemExit) as done:
        main([*name.split(), "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "--quiet" in text and "--debug" in text
    assert ("--overwrite" in text) == (name not in READ_ONLY)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("flags") / "run"
    assert main(["train", "--data", "digits", "--model", "mlp", "--hidden", "16", "--latent-dim", "4", "--epochs",
                 "1", "--threads", "1", "--out", str(out), "--quiet"]) == 0
    return out


def test_writers_refuse_to_replace_an_output_without_overwrite(small_run, tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((3, 1, 8, 8), np.float32))
    z = tmp_path / "z.npy"
    np.save(z, np.zeros((3, 4), np.float32))
    commands = {
        "encode": (["encode", str(small_run), str(x)], "codes.npy"),
        "decode": (["decode", str(small_run), str(z)], "x_hat.npy"),
        "reconstruct": (["reconstruct", str(small_run), str(x)], "recon.npy"),
        "export": (["export", str(small_run), "--onnx"], "model.onnx"),
    }
    for name, (argv, output) in commands.items():
        target = tmp_path / output
        target.write_bytes(b"keep me")
        assert main([*argv, str(target)]) == 2, name
        assert "pass --overwrite" in capsys.readouterr().err
        assert target.read_bytes() == b"keep me", f"{name} replaced its output without --overwrite"
        assert main([*argv, str(target), "--overwrite"]) == 0, name
        assert target.read_bytes() != b"keep me"
    capsys.readouterr()


def test_optimize_overwrite_starts_the_study_afresh(tmp_path, capsys):
    argv = ["optimize", "--data", "digits", "--trials", "1", "--epochs", "1", "--subset", "200", "--final-epochs",
            "1", "--max-front", "2", "--threads", "1", "--out", str(tmp_path / "opt"), "--quiet"]
    import optuna

    def completed():
        study = optuna.load_study(study_name="aeopt", storage=f"sqlite:///{tmp_path / 'opt' / 'study.db'}")
        return len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE])

    assert main(argv) == 0 and main(argv) == 0
    assert completed() == 2    # a rerun continues the study
    assert main([*argv, "--overwrite"]) == 0
    assert completed() == 1    # --overwrite started a new one
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main([*argv[:-3], "--out", str(tmp_path / "other"), "--overwrite", "--quiet"]) == 2
    assert "not an aeopt optimize folder" in capsys.readouterr().err
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_ctrl_c_inside_a_finalizer_reaches_the_main_code(monkeypatch):
    """Python drops a KeyboardInterrupt raised in a finalizer (printing 'Exception ignored'); a Ctrl-C that
    landed in SQLAlchemy's weakref callback let `optimize` run on to the end. The CLI re-delivers it."""
    import sys

    from aeopt.cli.main import redeliver_ctrl_c_from_finalizers

    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    redeliver_ctrl_c_from_finalizers()

    class InterruptedWhileCollected:
        def __del__(self):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        victim = InterruptedWhileCollected()
        del victim
        import time

        time.sleep(2)  # the re-delivered interrupt arrives 10 ms after the finalizer, ending the sleep


def test_a_library_failing_on_its_way_out_of_ctrl_c_is_still_an_interruption(monkeypatch, capsys):
    """Ctrl-C at the wrong moment in Optuna's trial bookkeeping surfaced as an UnboundLocalError traceback
    (exit 1); it is the user's Ctrl-C: one line, exit 130. A plain bug still raises."""
    from aeopt.cli import evaluate as evaluate_cli

    def interrupted_then_broken(args):
        try:
            raise KeyboardInterrupt
        finally:
            raise UnboundLocalError("cannot access local variable 'updated_state'")

    monkeypatch.setattr(evaluate_cli, "cmd_models", interrupted_then_broken)
    assert main(["models"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("aeopt: interrupted;") and len(err.strip().splitlines()) == 1

    def broken(args):
        raise UnboundLocalError("a real bug")

    monkeypatch.setattr(evaluate_cli, "cmd_models", broken)
    with pytest.raises(UnboundLocalError):
        main(["models"])


def test_ctrl_c_that_a_c_extension_turns_into_another_error_is_still_an_interruption(monkeypatch, capsys):
    """matplotlib's image resampling turned a Ctrl-C into "ValueError: Invalid affine transformation matrix",
    with no KeyboardInterrupt left in its chain (chaos.py caught it): one line, exit 130. The handler that
    notes it is aeopt's only while main runs."""
    import os
    import signal
    import time

    from aeopt.cli import evaluate as evaluate_cli

    def swallowed_then_broken(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler raises KeyboardInterrupt here
        except KeyboardInterrupt:
            pass  # as the C extension did
        raise ValueError("Invalid affine transformation matrix")

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, as in a terminal
    try:
        monkeypatch.setattr(evaluate_cli, "cmd_models", swallowed_then_broken)
        assert main(["models"]) == 130
        err = capsys.readouterr().err
        assert err.startswith("aeopt: interrupted;") and len(err.strip().splitlines()) == 1
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handed back

        def broken(args):  # without a Ctrl-C the same error is a bug, and raises
            raise ValueError("Invalid affine transformation matrix")

        monkeypatch.setattr(evaluate_cli, "cmd_models", broken)
        with pytest.raises(ValueError):
            main(["models"])
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_out_of_an_exec_still_exits_130_not_by_signal(tmp_path):
    """CPython notes a KeyboardInterrupt that leaves an exec() of a string (dataclasses and torch.compile
    run code that way) and, at exit, kills itself with SIGINT if the note is still set, whatever exit code
    the program chose: chaos.py saw exit -2 after the one-line message. It shows under `python -m aeopt`
    (a script file's SystemExit exits directly); the CLI clears the note."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "interrupted_cli.py"
    script.write_text(
        "import sys\n"
        "from aeopt.cli import evaluate as evaluate_cli\n"
        "from aeopt.cli.main import main\n"
        "def interrupted(args):\n"
        "    exec('raise KeyboardInterrupt')  # as if Ctrl-C landed inside generated code\n"
        "evaluate_cli.cmd_models = interrupted\n"
        "if sys.argv[1] == 'bare':  # the same exit without the CLI's handling: the note kills the process\n"
        "    try:\n"
        "        interrupted(None)\n"
        "    except KeyboardInterrupt:\n"
        "        sys.exit(130)\n"
        "sys.exit(main(['models']))\n")
    env = {"PYTHONPATH": f"{Path(__file__).resolve().parents[2]}:{tmp_path}", "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "interrupted_cli"]
    done = subprocess.run([*run, "cli"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 130, done.stderr
    assert done.stderr.startswith("aeopt: interrupted;") and len(done.stderr.strip().splitlines()) == 1
    bare = subprocess.run([*run, "bare"], capture_output=True, text=True, env=env, timeout=300)
    assert bare.returncode == -2  # CPython's behaviour the CLI works around (if this changes, so can the CLI)
