"""Crash safety, proven by force: start each command, kill it at a random moment, recover the way
aeopt's own messages say, and check every file it left.

  python benchmarks/chaos.py                     # 20 SIGKILLs + 3 SIGINTs per command: results/chaos.md
  python benchmarks/chaos.py --kills 1 --sigints 1 --commands train,optimize   # the test's version

For each command: one uninterrupted reference run (its duration sets the kill window, its result
is what every recovered run must equal), then repeatedly: start the command, SIGKILL it at a
uniformly random moment of that window, check every file under the work folder (each one must
parse as its type: JSON, YAML, CSV, safetensors, PNG, npy, SQLite, .aec), snapshot the study's
completed trials (optimize), then recover as a user would: rerun the command and follow the
one-line error's advice (`--resume RUN`, `--overwrite`) until it succeeds; then check the files
again, the result against the reference (test MSE, AUROC, the .aec bytes) and that no completed
trial was lost. SIGINT (Ctrl-C) is checked the same way, plus: exit code 130, one line, no traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.chaos_files import check_files, run_dirs_unfinished  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ONE_THREAD = ["--threads", "1"]
TRAIN_EPOCHS = 25   # long enough that most kills land in training, not in Python's start-up (the test uses fewer)
# The commands run the aeopt beside this script (run it from a checkout that nobody edits meanwhile).
# One OpenMP thread: these jobs are tiny, and on a busy machine a second thread makes them slower.
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}


def aeopt(args: list[str], cwd: Path, *, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aeopt", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=ENV)


# ---------------------------------------------------------------- recovering as a user would

RESUME_HINT = re.compile(r"aeopt train --resume (\S+?)`")


def recover(argv: list[str], cwd: Path) -> tuple[bool, str]:
    """Rerun the command; on a one-line error follow its advice (--resume / --overwrite). Returns
    (succeeded, how)."""
    how, args = "rerun", list(argv)
    for _ in range(3):
        done = aeopt(args, cwd)
        if done.returncode == 0:
            return True, how
        message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        resume = RESUME_HINT.search(message)
        if resume and "--resume" not in args:
            how, args = "resume", ["train", "--resume", resume.group(1), "--quiet", *ONE_THREAD]
        elif "--overwrite" in message and "--overwrite" not in args:
            how, args = "overwrite", [*args, "--overwrite"]
        else:
            return False, f"{how}: rc {done.returncode}: {message[:200]}"
    return False, how


# ---------------------------------------------------------------- the commands

@dataclass
class Command:
    """One command under test: the argv of attempt `i`, and what its finished output must equal."""
    name: str
    work: Path

    def setup(self) -> None: ...

    def argv(self, i: str) -> list[str]: raise NotImplementedError

    def outcome(self, i: str):
        """The result a finished attempt must share with the reference (e.g. its test MSE)."""
        return json.loads((self.work / f"out-{i}" / "metrics.json").read_text())["test"]["mse"]

    def snapshot(self, i: str):
        return None

    def lost(self, i: str, snapshot) -> int:
        return 0


class Train(Command):
    def argv(self, i):
        return ["train", "--data", "digits", "--epochs", str(TRAIN_EPOCHS), "--out", f"out-{i}", "--quiet",
                *ONE_THREAD]


class Resume(Command):
    """`train --resume` of a 10-epoch run to 40 epochs, killed while it continues."""

    def setup(self):
        done = aeopt(["train", "--data", "digits", "--epochs", "10", "--out", "base", "--quiet", *ONE_THREAD],
                     self.work)
        assert done.returncode == 0, done.stderr

    def prepare(self, i):
        shutil.rmtree(self.work / f"out-{i}", ignore_errors=True)
        shutil.copytree(self.work / "base", self.work / f"out-{i}")

    def argv(self, i):
        return ["train", "--resume", f"out-{i}", "--epochs", "40", "--quiet", *ONE_THREAD]


class Optimize(Command):
    def argv(self, i):
        return ["optimize", "--data", "digits", "--trials", "4", "--epochs", "2", "--subset", "300",
                "--final-epochs", "2", "--max-front", "2", "--out", f"out-{i}", "--quiet", *ONE_THREAD]

    def outcome(self, i):
        return None  # a rerun adds trials: the study grows, so it is checked by its completed trials instead

    def snapshot(self, i):
        return completed_trials(self.work / f"out-{i}" / "study.db")

    def lost(self, i, snapshot):
        now = completed_trials(self.work / f"out-{i}" / "study.db")
        return sum(1 for number, values in snapshot.items() if now.get(number) != values)


def completed_trials(db: Path) -> dict[int, tuple]:
    """Trial number -> objective values of every COMPLETE trial, read with SQLite directly (read-only)."""
    if not db.is_file():
        return {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        try:
            rows = con.execute("SELECT t.number, v.objective, v.value FROM trials t JOIN trial_values v "
                               "ON t.trial_id = v.trial_id WHERE t.state = 'COMPLETE'").fetchall()
        except sqlite3.DatabaseError:
            return {}   # tables not created yet
    trials: dict[int, list] = {}
    for number, objective, value in rows:
        trials.setdefault(number, []).append((objective, value))
    return {n: tuple(sorted(v)) for n, v in trials.items()}


class Shrink(Command):
    def setup(self):
        done = aeopt(["train", "--data", "digits", "--model", "conv", "--epochs", "4", "--out", "source",
                      "--quiet", *ONE_THREAD], self.work)
        assert done.returncode == 0, done.stderr

    def argv(self, i):
        return ["shrink", "source", "--prune", "0.5", "--quantize", "int8", "--out", f"out-{i}", "--quiet"]


class DetectFit(Command):
    def argv(self, i):
        return ["detect", "fit", "--data", "digits", "--normal-class", "0", "--epochs", "5", "--out", f"out-{i}",
                "--quiet"]

    def outcome(self, i):
        return json.loads((self.work / f"out-{i}" / "metrics.json").read_text())["detect"]["auroc"]


class CodecTrain(Command):
    """`train --model codec`: killed while training or while it builds its tables and test files."""

    def argv(self, i):
        return ["train", "--model", "codec", "--data", "digits", "--latent-dim", "4", "--width", "8", "--depth", "2",
                "--epochs", "8", "--out", f"out-{i}", "--quiet", *ONE_THREAD]

    def outcome(self, i):
        test = json.loads((self.work / f"out-{i}" / "metrics.json").read_text())["test"]
        return test["bytes"], test["psnr"]


class Compress(Command):
    """`compress` of 300 images, one .aec each: every file finished before the kill must be whole."""

    def setup(self):
        done = aeopt(["train", "--model", "codec", "--data", "digits", "--latent-dim", "4", "--width", "8",
                      "--depth", "2", "--epochs", "1", "--out", "codec", "--quiet", *ONE_THREAD], self.work)
        assert done.returncode == 0, done.stderr
        from PIL import Image
        from sklearn.datasets import load_digits

        (self.work / "images").mkdir()
        for n, image in enumerate(load_digits().images[:300]):
            Image.fromarray((image * 255 / 16).astype(np.uint8)).save(self.work / "images" / f"{n:03d}.png")

    def argv(self, i):
        return ["compress", "codec", *sorted(f"images/{p.name}" for p in (self.work / "images").iterdir()),
                "--out", f"out-{i}", "--quiet"]

    def outcome(self, i):
        return tuple(p.read_bytes() for p in sorted((self.work / f"out-{i}").glob("*.aec")))


COMMANDS = {"train": Train, "train --resume": Resume, "optimize": Optimize, "shrink": Shrink,
            "detect fit": DetectFit, "codec train": CodecTrain, "compress": Compress}


# ---------------------------------------------------------------- the attack

@dataclass
class Tally:
    kills: int = 0
    finished_first: int = 0   # the command ended before its kill moment: not counted as a kill
    files_checked: int = 0
    corrupt_after_kill: int = 0
    recovered: int = 0
    recovery_ways: dict = field(default_factory=dict)
    corrupt_after_recovery: int = 0
    unfinished_runs: int = 0
    differs: int = 0
    lost_trials: int = 0
    leftovers: int = 0
    sigints: int = 0
    sigint_clean: int = 0
    problems: list = field(default_factory=list)


def attack(command: Command, i: str, window: float, reference, tally: Tally, rng: random.Random, sig: int) -> None:
    if hasattr(command, "prepare"):
        command.prepare(i)
    argv = command.argv(i)
    # Ctrl-C as in a terminal: a script started in the background (`&`) passes on an ignored SIGINT, and
    # Python then never raises KeyboardInterrupt.
    process = subprocess.Popen([sys.executable, "-m", "aeopt", *argv], cwd=command.work, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        process.wait(timeout=rng.uniform(0.05, 1.0) * window)
        tally.finished_first += 1
        return
    except subprocess.TimeoutExpired:
        process.send_signal(sig)
    stderr = process.communicate(timeout=600)[1]
    if process.returncode == 0:  # the signal came as it was exiting (interpreter shutdown): it had finished
        tally.finished_first += 1
        return
    if sig == signal.SIGINT:
        tally.sigints += 1
        lines = stderr.strip().splitlines()
        # -SIGINT and silence: it came before the interpreter had installed its handler (its first moments,
        # longer on a loaded machine): nothing was written and nothing printed, which is clean too.
        silent_start = process.returncode == -signal.SIGINT and not lines
        if silent_start or (process.returncode == 130 and len(lines) == 1
                            and lines[0].startswith("aeopt: interrupted")):
            tally.sigint_clean += 1
        else:
            tally.problems.append(f"{command.name} #{i} SIGINT: rc {process.returncode}: {stderr[-300:]!r}")
    else:
        tally.kills += 1
    after_kill = check_files(command.work)
    tally.files_checked += after_kill.files
    tally.corrupt_after_kill += len(after_kill.corrupt)
    tally.problems += [f"{command.name} #{i} after kill: {c}" for c in after_kill.corrupt]
    snapshot = command.snapshot(i)
    ok, how = recover(argv, command.work)
    tally.recovery_ways[how if ok else "failed"] = tally.recovery_ways.get(how if ok else "failed", 0) + 1
    if not ok:
        tally.problems.append(f"{command.name} #{i} recovery failed: {how}")
        return
    tally.recovered += 1
    after = check_files(command.work)
    tally.files_checked += after.files
    tally.corrupt_after_recovery += len(after.corrupt)
    tally.leftovers = after.leftovers
    tally.problems += [f"{command.name} #{i} after recovery: {c}" for c in after.corrupt]
    unfinished = run_dirs_unfinished(command.work)
    tally.unfinished_runs += len(unfinished)
    tally.problems += [f"{command.name} #{i}: unfinished run {u}" for u in unfinished]
    if reference is not None and command.outcome(i) != reference:
        tally.differs += 1
        tally.problems.append(f"{command.name} #{i}: result differs from the uninterrupted run")
    lost = command.lost(i, snapshot)
    tally.lost_trials += lost
    if lost:
        tally.problems.append(f"{command.name} #{i}: {lost} completed trial(s) lost")
    shutil.rmtree(command.work / f"out-{i}", ignore_errors=True)  # keep the work folder small


def run_command(name: str, work: Path, kills: int, sigints: int, seed: int, log=print) -> tuple[Tally, float]:
    command = COMMANDS[name](name, work)
    work.mkdir(parents=True)
    command.setup()
    if hasattr(command, "prepare"):
        command.prepare("ref")
    started = time.perf_counter()
    done = aeopt(command.argv("ref"), work)
    window = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{name}: the reference run failed: {done.stderr[-500:]}")
    reference = command.outcome("ref")
    tally, rng = Tally(), random.Random(seed)
    attempt = 0
    for sig, wanted in ((signal.SIGKILL, kills), (signal.SIGINT, sigints)):
        count = (lambda: tally.kills) if sig == signal.SIGKILL else (lambda: tally.sigints)
        tries = 0
        while count() < wanted and tries < 4 * wanted:
            tries += 1
            attempt += 1
            attack(command, str(attempt), window, reference, tally, rng, sig)
        log(f"{name}: {signal.Signals(sig).name} {count()}/{wanted} done")
    return tally, window


def table(rows: dict[str, tuple[Tally, float]]) -> str:
    head = ("| command | window s | SIGKILLs | ended first | files checked | corrupt after kill | recovered | "
            "how | corrupt after recovery | unfinished runs | result differs | lost trials | temp leftovers | "
            "Ctrl-C clean |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    total = Tally()
    for name, (t, window) in rows.items():
        ways = ", ".join(f"{k} {v}" for k, v in sorted(t.recovery_ways.items()))
        lines.append(f"| `{name}` | {window:.1f} | {t.kills} | {t.finished_first} | {t.files_checked} | "
                     f"{t.corrupt_after_kill} | {t.recovered}/{t.kills + t.sigints} | {ways} | "
                     f"{t.corrupt_after_recovery} | {t.unfinished_runs} | {t.differs} | {t.lost_trials} | "
                     f"{t.leftovers} | {t.sigint_clean}/{t.sigints} |")
        for key in ("kills", "files_checked", "corrupt_after_kill", "recovered", "corrupt_after_recovery",
                    "unfinished_runs", "differs", "lost_trials", "sigints", "sigint_clean"):
            setattr(total, key, getattr(total, key) + getattr(t, key))
    lines.append(f"| **all** | | **{total.kills}** | | {total.files_checked} | **{total.corrupt_after_kill}** | "
                 f"**{total.recovered}/{total.kills + total.sigints}** | | **{total.corrupt_after_recovery}** | "
                 f"{total.unfinished_runs} | {total.differs} | **{total.lost_trials}** | | "
                 f"{total.sigint_clean}/{total.sigints} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs per command (default 20)")
    parser.add_argument("--sigints", type=int, default=3, help="SIGINTs per command (default 3)")
    parser.add_argument("--commands", default=",".join(COMMANDS), help="comma list of " + ", ".join(COMMANDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", help="work folder (default: a temporary one, removed after)")
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/chaos.md")
    parser.add_argument("--append", metavar="TITLE",
                        help="add this run to benchmarks/results/chaos.md as a section '## TITLE' (earlier runs kept)")
    args = parser.parse_args(argv)
    import tempfile

    from benchmarks.common import machine_line

    root = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="aeopt-chaos-"))
    started = time.time()
    rows = {}
    try:
        for n, name in enumerate(args.commands.split(",")):
            rows[name] = run_command(name, root / f"{n}-{name.replace(' ', '_')}", args.kills, args.sigints,
                                     args.seed + n)
    finally:
        if not args.work:
            shutil.rmtree(root, ignore_errors=True)
    problems = [p for t, _ in rows.values() for p in t.problems]
    flags = (f"--kills {args.kills} --sigints {args.sigints}" + (f" --seed {args.seed}" if args.seed else "")
             + (f" --commands \"{args.commands}\"" if args.append else ""))
    how = (f"`python benchmarks/chaos.py {flags}` ({(time.time() - started) / 60:.0f} min). Each kill lands at a "
           f"uniformly random moment of the command's own uninterrupted duration (the window); recovery reruns "
           f"the command and follows its one-line advice (`--resume`, `--overwrite`). A recovered result must "
           f"equal the uninterrupted run's (test MSE, AUROC, the .aec bytes); optimize's completed trials must "
           f"all survive with their values.")
    found = "Problems:\n\n" + "\n".join(f"- {p}" for p in problems) if problems else "No problems found."
    text = f"# Chaos: commands killed at random moments\n\n{machine_line()}\n\n{how}\n\n{table(rows)}\n\n{found}\n"
    print(text)
    if args.write or args.append:
        from aeopt.runs import atomic_write_text

        RESULTS.mkdir(exist_ok=True)
        if args.append:
            before = (RESULTS / "chaos.md").read_text().rstrip("\n")
            text = f"{before}\n\n\n## {args.append}\n\n{machine_line()}\n\n{how}\n\n{table(rows)}\n\n{found}\n"
        atomic_write_text(RESULTS / "chaos.md", text)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
