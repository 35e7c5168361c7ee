"""aeopt optimize: the front, resuming, shared storage, kills, and bad input (digits, tiny budgets)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

import aeopt
from aeopt.cli import main
from aeopt.errors import AeoptError
from aeopt.optimize.objectives import parse_objectives
from aeopt.optimize.pareto import non_dominated
from aeopt.optimize.search import parse_budget, split_trials
from aeopt.optimize.trial import TrialPlan, dominated_count

ROOT = Path(__file__).resolve().parents[2]
# Small, fast models so each trial takes a second or two on digits.
TINY_SPACE = """
model: [conv, mlp]
width: {low: 4, high: 8}
depth: 1
hidden_size: {low: 16, high: 64, log: true}
hidden_layers: 1
batch_size: 128
"""
FAST = ["--epochs", "2", "--subset", "400", "--final-epochs", "1", "--max-front", "2", "--latent-dim", "8", "--threads", "1", "--quiet"]


@pytest.fixture
def space(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(TINY_SPACE)
    return path


def study_trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="aeopt", storage=storage).get_trials(deepcopy=False)


def test_front_is_non_dominated_and_rerun_resumes(tmp_path: Path, space: Path):
    out = tmp_path / "opt"
    result = aeopt.optimize("digits", out=out, trials=3, epochs=2, subset=400, final_epochs=1, latent_dim=8,
                            space=space, threads=1, progress=False, log=lambda m: None)
    front = json.loads((out / "pareto.json").read_text())
    assert front and front == json.loads(json.dumps(result.front))
    for m in front:
        assert {"mse", "test_mse", "params", "train_flops_per_sample", "run"} <= set(m)
        assert 0 < m["mse"] < 0.2 and 0 < m["test_mse"] < 0.2 and m["params"] > 0
        assert (out / m["run"] / "model.safetensors").is_file()
        member = json.loads((out / m["run"] / "metrics.json").read_text())
        assert member["pca"]["components"] == 8 and member["pca"]["mse"] > 0  # the baseline every run has
    points = [(m["mse"], m["params"]) for m in front]
    assert sorted(non_dominated(points)) == list(range(len(front)))  # nobody on the front is dominated
    assert result.recommended in result.front
    for name in ("trials.csv", "pareto.csv", "pareto.png", "report.md", "study.db"):
        assert (out / name).is_file(), name
    assert "Recommendation" in (out / "report.md").read_text()
    storage = f"sqlite:///{out / 'study.db'}"
    before = {t.number: t.values for t in study_trials(storage)}
    assert len(before) == 3

    assert main(["optimize", "--data", "digits", "--out", str(out), "--trials", "2", "--space", str(space)]
                + FAST) == 0
    after = {t.number: t.values for t in study_trials(storage)}
    assert len(after) == 5 and all(after[n] == v for n, v in before.items())
    with open(out / "trials.csv") as f:
        assert [int(r["trial"]) for r in csv.DictReader(f)] == [0, 1, 2, 3, 4]


def test_budget_covers_search_and_retraining(tmp_path: Path, space: Path):
    budget = 20.0
    started = time.time()
    result = aeopt.optimize("digits", out=tmp_path / "opt", budget=budget, epochs=2, subset=400, latent_dim=8,
                            space=space, threads=1, progress=False, log=lambda m: None)
    elapsed = time.time() - started
    assert elapsed < budget + 10, f"{elapsed:.1f} s for a {budget:.0f} s budget"  # generous: shared machines
    # with a budget the time left decides the epochs: up to BUDGET_MAX_EPOCHS, BEST_SHARE x for the best-error one
    from aeopt.optimize.api import BUDGET_MAX_EPOCHS
    from aeopt.optimize.retrain import BEST_SHARE

    most = BUDGET_MAX_EPOCHS * BEST_SHARE
    assert result.front and all(1 <= m["epochs"] <= m["planned_epochs"] <= most for m in result.front)
    assert all(0 < m["test_mse"] < 0.2 for m in result.front)
    report = (tmp_path / "opt" / "report.md").read_text()
    assert "20% for the search" in report
    assert all(f"trial {m['trial']} (" in report for m in result.skipped)


def test_choose_members_best_recommended_cheapest():
    from types import SimpleNamespace

    from aeopt.optimize.retrain import choose_members

    front = [SimpleNamespace(number=n, values=v) for n, v in
             [(7, (0.50, 1)), (3, (0.20, 5)), (9, (0.105, 20)), (4, (0.10, 90))]]  # sorted by cost
    picks = choose_members(front, tolerance=0.1, max_members=3)
    assert [p.trial.number for p in picks] == [7, 9, 4]  # cheapest first
    assert picks[1].reasons == ["recommended"] and picks[2].reasons == ["best error"]
    assert picks[0].reasons == ["cheapest"]
    assert [p.trial.number for p in choose_members(front, tolerance=0.0, max_members=2)] == [7, 4]
    # The others spread evenly between the ends (a straight front on log-log axes has no knee).
    wide = [SimpleNamespace(number=n, values=(1.0 / (n + 1), n + 1)) for n in range(9)]
    assert [p.trial.number for p in choose_members(wide, tolerance=0.0, max_members=4)] == [0, 3, 5, 8]


def test_the_knee_of_the_front_is_retrained_after_the_ends():
    """The member furthest below the cheapest-to-best line on log-log axes: trial 3 (12 units of cost buy
    nearly the error of 1000), not trial 4 or the middle of the list."""
    from types import SimpleNamespace

    from aeopt.optimize.retrain import choose_members, knee

    front = [SimpleNamespace(number=n, values=v) for n, v in
             [(1, (0.5, 1)), (2, (0.45, 10)), (3, (0.2, 12)), (4, (0.19, 100)), (5, (0.18, 1000))]]
    assert knee(front, front[-1]).number == 3
    picks = choose_members(front, tolerance=0.0, max_members=3)
    assert [(p.trial.number, p.reasons) for p in picks] == [
        (1, ["cheapest"]), (3, ["knee of the front"]), (5, ["best error", "recommended"])]
    assert knee(front[:2], front[1]) is None   # nothing between the ends


def test_two_workers_share_one_storage_without_losing_or_duplicating(tmp_path: Path, space: Path):
    journal = tmp_path / "study.journal"
    assert main(["optimize", "--data", "digits", "--out", str(tmp_path / "opt"), "--trials", "4", "--workers", "2",
                 "--storage", f"journal:{journal}", "--space", str(space)] + FAST) == 0
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    trials = optuna.load_study(study_name="aeopt", storage=storage).get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state.is_finished() for t in trials)
    runs = [t.user_attrs["run"] for t in trials if "run" in t.user_attrs]
    assert len(runs) == len(set(runs)) == 4


def test_killed_search_resumes(tmp_path: Path, space: Path):
    out = tmp_path / "opt"
    command = [sys.executable, "-m", "aeopt", "optimize", "--data", "digits", "--out", str(out), "--trials", "500",
               "--space", str(space)] + FAST
    errors = open(tmp_path / "stderr.txt", "w")  # a file, not a pipe: a killed child cannot block on it
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True)
    storage = f"sqlite:///{out / 'study.db'}"
    complete: list = []
    deadline = time.time() + 60
    while len(complete) < 1 and time.time() < deadline and process.poll() is None:
        time.sleep(0.5)
        if (out / "study.db").is_file():
            try:
                complete = [t for t in study_trials(storage) if t.state == optuna.trial.TrialState.COMPLETE]
            except Exception:  # the study may not be created yet
                complete = []
    said = (tmp_path / "stderr.txt").read_text()[-800:]  # it exited with code 2 once in ~12 runs: say why next time
    assert process.poll() is None, f"the search exited by itself (code {process.returncode}) before the kill: {said}"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    errors.close()
    assert len(complete) >= 1, "the search did not get going"
    kept = {t.number: t.values for t in complete}
    assert main(["optimize", "--data", "digits", "--out", str(out), "--trials", "1", "--space", str(space)]
                + FAST) == 0
    trials = study_trials(storage)
    done = {t.number: t.values for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert all(done[n] == v for n, v in kept.items())
    assert max(t.number for t in trials) > max(kept)
    assert json.loads((out / "pareto.json").read_text())


@pytest.mark.parametrize("extra, message", [
    (["--objectives", "mse,speed"], "unknown objective 'speed'"),
    (["--objectives", "mse"], "one or two different costs"),
    (["--budget", "10x"], "cannot read budget '10x'"),
    (["--space", "BAD_YAML"], "is not valid YAML"),
    (["--space", "UNKNOWN_KEY"], "unknown search setting colour"),
    (["--space", "EMPTY_RANGE"], "range is empty"),
    (["--space", "BAD_CHOICE"], "unknown activation 'swish2'"),
    (["--storage", "nonsense"], "cannot read storage"),
])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys, extra, message):
    files = {"BAD_YAML": "width: [8, 16\n", "UNKNOWN_KEY": "colour: red\n", "EMPTY_RANGE": "width: {low: 32, high: 8}\n",
             "BAD_CHOICE": "activation: [relu, swish2]\n"}
    if extra[-1] in files:
        path = tmp_path / "space.yaml"
        path.write_text(files[extra[-1]])
        extra = [extra[0], str(path)]
    code = main(["optimize", "--data", "digits", "--out", str(tmp_path / "opt"), "--trials", "1"] + extra)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "opt" / "study.db").exists() or "storage" in message


def test_small_pieces():
    assert parse_budget("90s") == 90 and parse_budget("10m") == 600 and parse_budget("1.5h") == 5400
    with pytest.raises(AeoptError):
        parse_budget("0m")
    assert parse_objectives("mse,train_flops_per_sample,latency").costs == ("flops", "latency")
    assert non_dominated([(1, 5), (2, 2), (3, 3), (5, 1), (1, 5)]) == [0, 1, 3]
    assert dominated_count(0.5, (10,), [(0.4, (9,)), (0.6, (1,)), (0.5, (10,)), (0.1, (10,))]) == 2
    assert split_trials(7, 2) == [4, 3] and split_trials(1, 3) == [1, 0, 0] and split_trials(None, 2) == [None] * 2
    plan = TrialPlan(data="digits", data_dir=None, out=Path("."), objectives=parse_objectives("mse,params"),
                     space={}, epochs=9)
    assert plan.rungs == [1, 3]


def retrain_on_a_fake_clock(monkeypatch, reasons: list[list[str]], deadline: float, seconds_per_epoch: float):
    """retrain_front on a fake clock starting at 1000 s, with members `reasons` (trials 1, 2, ...) whose search
    predicts 1 s per full-data epoch and which really take `seconds_per_epoch`. Returns (trial, epochs) in
    training order and the clock at the end."""
    from types import SimpleNamespace

    from aeopt.optimize import retrain

    clock = {"now": 1000.0}
    trained = []

    def fake_member(pick, plan, dataset, epochs, deadline, log, most_epochs=None):
        trained.append((pick.trial.number, epochs))
        clock["now"] += epochs * seconds_per_epoch
        return {"epochs": epochs, "train_seconds": epochs * seconds_per_epoch, "val_seconds": 0.0}

    monkeypatch.setattr(retrain.time, "time", lambda: clock["now"])
    monkeypatch.setattr(retrain, "retrain_member", fake_member)
    picks = [retrain.Pick(SimpleNamespace(number=n, user_attrs={"samples_per_second": 1000.0}), why)
             for n, why in enumerate(reasons, start=1)]
    data = SimpleNamespace(x_train=range(900), n_train=900, x_val=range(300))   # (900 + 300 / 3) / 1000 = 1 s per epoch
    retrain.retrain_front(picks, None, data, deadline=deadline, max_epochs=100, log=lambda m: None)
    return trained, clock["now"]


def test_members_replan_their_epochs_from_their_own_first_epoch():
    """After epoch 2 the run's epochs and its schedule's length follow the speed of that epoch (within the
    deadline, REPLAN_SAFETY margin), never more than it may have; other epochs change nothing (once=True)."""
    from types import SimpleNamespace

    from aeopt.optimize.retrain import REPLAN_SAFETY
    from aeopt.train import DeadlinePlan
    from aeopt.train.optim import Schedule

    clock = {"now": 1000.0}
    for most, expected in ((100, 2 + int(0.98 * 80 / 8)), (5, 5)):
        hook = DeadlinePlan(1100.0, most, once=True, safety=REPLAN_SAFETY, clock=lambda: clock["now"])
        trainer = SimpleNamespace(epochs=13, steps_per_epoch=7, schedule=Schedule("onecycle", total_steps=13 * 7))
        clock["now"] = 1012.0                         # the first epoch, start-up included, took 12 s
        hook.on_epoch_end(trainer, {"epoch": 1})
        assert trainer.epochs == 13
        clock["now"] = 1020.0                         # the second took 8 s: 80 s are left
        hook.on_epoch_end(trainer, {"epoch": 2})
        assert trainer.epochs == expected and trainer.schedule.total_steps == expected * 7
        clock["now"] = 1028.0
        hook.on_epoch_end(trainer, {"epoch": 3})
        assert trainer.epochs == expected


def test_best_error_member_trains_last_with_more_epochs(monkeypatch):
    """With a budget, the other members share the time equally, the recommended member gets LEAD_SHARE times
    their epochs, and the best-error member, trained last with a thinner margin, at least BEST_SHARE times plus
    whatever they left; nothing runs past the deadline."""
    from aeopt.optimize.retrain import BEST_SHARE, LEAD_SHARE

    trained, end = retrain_on_a_fake_clock(monkeypatch, [["cheapest"], ["best error"], ["recommended"],
                                                         ["spread along the cost"]], 1060.0, 1.0)
    assert [n for n, _ in trained] == [1, 3, 4, 2]
    epochs = dict(trained)
    # 0.85 x (60 s - 4 x 2 s overhead) / (1 + 2 + 1 + 3) s -> 6; then (overhead now measured as 0 s)
    # 2 x 0.85 x 54 / 6 -> 15; 0.85 x 39 / 4 -> 8; the last, 0.95 x 31 -> 29 (SAFETY would give 26)
    assert (epochs[1], epochs[3], epochs[4], epochs[2]) == (6, 15, 8, 29)
    assert epochs[2] >= BEST_SHARE * epochs[4] and epochs[3] >= LEAD_SHARE * epochs[1]
    assert end <= 1060.0


def test_only_configurations_that_fit_the_budget_are_candidates():
    """With a budget, the front is recomputed over the trials that get MIN_EPOCHS epochs in half the time left,
    so a fast trial dominated only by a too-slow one becomes a candidate."""
    from types import SimpleNamespace

    from aeopt.optimize.pareto import search_front
    from aeopt.optimize.retrain import MIN_EPOCHS, trainable_within

    data = SimpleNamespace(x_train=range(900), n_train=900, x_val=range(300))   # 1000 sample-passes per full-data epoch
    rate_at_limit = 1000 * MIN_EPOCHS / 60                          # MIN_EPOCHS epochs in exactly 60 s
    study = optuna.create_study(directions=["minimize", "minimize"])
    for values, rate in (((0.01, 900.0), rate_at_limit * 0.9),    # best error, too slow
                         ((0.02, 500.0), rate_at_limit),          # dominated by nothing
                         ((0.03, 100.0), rate_at_limit * 2),
                         ((0.015, 950.0), rate_at_limit * 3)):    # dominated by the first alone
        study.add_trial(optuna.trial.create_trial(values=list(values), user_attrs={
            "settings": {}, "samples_per_second": rate}))
    fits = trainable_within(120.0, data)
    assert [t.number for t in search_front(study)] == [2, 1, 0]
    assert [t.number for t in search_front(study, fits)] == [2, 1, 3]
    assert not fits(study.trials[0]) and fits(study.trials[1])


def test_members_after_a_faster_than_predicted_one_get_the_time_it_saved(monkeypatch):
    """Full-data epochs that run twice as fast as the search predicted: the best-error member, trained after,
    is sized at the corrected speed (69 epochs, not 34) and still ends within the budget."""
    trained, end = retrain_on_a_fake_clock(monkeypatch, [["cheapest"], ["best error"]], 1040.0, 0.5)
    # 0.85 x (40 s - 2 x 2 s) / (1 + 3) -> 7 epochs in 3.5 s; then 3 x 0.95 x 36.5 s / (3 x 0.5 s) -> 69
    assert dict(trained) == {1: 7, 2: 69}
    assert end <= 1040.0


def test_a_killed_members_half_written_folder_is_removed_unless_retrained_again(tmp_path):
    """chaos.py found front/0003 left without metrics.json after a rerun whose front no longer held trial 3."""
    from aeopt.optimize.retrain import remove_unfinished_members

    for name, finished in (("0001", True), ("0002", False), ("0003", False)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text("model: conv\n")
        if finished:
            (tmp_path / name / "metrics.json").write_text("{}")
    remove_unfinished_members(tmp_path, keep={2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0001", "0002"]


RACE_WORKER = """
import sys, time
from pathlib import Path
from aeopt.optimize.search import open_storage
start, paths = float(sys.argv[1]), sys.argv[2:]
for i, path in enumerate(paths):
    while time.time() < start + i:  # every worker opens the same new database at the same moment
        time.sleep(0.001)
    open_storage(f"sqlite:///{path}", Path(path).parent)
print("opened", len(paths))
"""


def test_workers_opening_a_new_database_together_all_succeed(tmp_path: Path):
    # The losers of the race to create Optuna's tables used to exit 2 ("UNIQUE constraint failed:
    # alembic_version.version_num"): about 2 in 5 rounds of 3 processes; this is what ended
    # test_killed_search_resumes' search early once (its poller opens the study while the search creates it).
    paths = [str(tmp_path / f"study{i}.db") for i in range(5)]
    start = time.time() + 6  # after every worker has imported optuna
    workers = [subprocess.Popen([sys.executable, "-c", RACE_WORKER, str(start), *paths], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [w.communicate(timeout=120) for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, [err[-400:] for _, err in results]
    assert all(out.strip() == "opened 5" for out, _ in results)
