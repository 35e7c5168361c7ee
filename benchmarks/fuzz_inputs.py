"""The long fuzz of every file aeopt reads: >= 10,000 hostile inputs per reader (IDX, npy, npy memory-mapped,
npz, CSV, image folders, shard folders, the YAML config, the search-space file), each of which must give one
AeoptError line or load as valid data; never another exception, a hang or a runaway allocation.

  flock /tmp/aeopt-bench.lock python benchmarks/fuzz_inputs.py [--examples 10000] [--readers idx,csv]

The inputs are tests/data/fuzz_cases.py's strategies (the CI test, tests/data/test_fuzz_readers.py, runs a
few hundred of each): random bytes and mutations of valid files. A case counts as a hang past
MAX_SECONDS_PER_CASE (it is interrupted by an alarm); a case's RSS growth is the peak resident memory while
it ran over the resident memory before it (the kernel's peak mark is reset per case), and the table shows
the largest: inputs are at most a few KB, so tens of MB would be a runaway allocation.
The codec container has its own long run, benchmarks/fuzz_codec.py. Writes benchmarks/results/fuzz_inputs.md.
"""
from __future__ import annotations

import argparse
import resource
import signal
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "data")]

from benchmarks.common import machine_line  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402

import fuzz_cases  # noqa: E402
from aeopt.errors import AeoptError  # noqa: E402
from aeopt.runs import atomic_write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MAX_SECONDS_PER_CASE = 20


class Hang(BaseException):
    """Raised by the alarm: not an Exception, so no reader's `except` can swallow it."""


class Tally:
    def __init__(self):
        self.cases = self.errors = self.accepted = self.others = self.hangs = 0
        self.slowest = self.max_growth_mb = 0.0
        self.failures: list[str] = []

    def run(self, reader, files: dict[str, bytes]) -> None:
        self.cases += 1
        reported = len(self.failures)
        with tempfile.TemporaryDirectory() as tmp:
            fuzz_cases.write_case(Path(tmp), files)
            rss_before = _reset_peak_rss()
            started = time.perf_counter()
            signal.alarm(MAX_SECONDS_PER_CASE)
            try:
                reader.load(Path(tmp))
            except AeoptError as err:
                self.errors += 1
                if "\n" in str(err) or not str(err):
                    self.others += 1
                    self.failures.append(f"{reader.name}: multi-line or empty message {str(err)[:100]!r}")
            except Hang:
                self.hangs += 1
                self.failures.append(f"{reader.name}: over {MAX_SECONDS_PER_CASE} s on {_sample(files)}")
            except Exception as err:  # noqa: BLE001  (the point: anything else is a bug)
                self.others += 1
                where = traceback.extract_tb(err.__traceback__)[-1]
                self.failures.append(f"{reader.name}: {type(err).__name__} at {Path(where.filename).name}:"
                                     f"{where.lineno}: {str(err)[:80]} on {_sample(files)}")
            else:
                self.accepted += 1
            finally:
                signal.alarm(0)
                if len(self.failures) > reported:
                    print(f"  failure: {self.failures[-1]}", flush=True)
                self.slowest = max(self.slowest, time.perf_counter() - started)
                self.max_growth_mb = max(self.max_growth_mb, (_kb("VmHWM") - rss_before) / 1024)


def _kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS and return that, in KB: the peak after a
    case minus this is what the case itself made resident, however briefly."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _kb("VmRSS")


def _sample(files: dict[str, bytes]) -> str:
    return repr({name: data[:40] for name, data in files.items()})[:200]


def _on_alarm(signum, frame):
    raise Hang


def fuzz(reader, tally: Tally, examples: int) -> None:
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(reader.inputs)
    def one(files):
        tally.run(reader, files)

    one()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=10_000, help="cases per reader")
    parser.add_argument("--readers", help="comma-separated names (default: all): " +
                        ", ".join(r.name for r in fuzz_cases.READERS))
    args = parser.parse_args()
    chosen = [r for r in fuzz_cases.READERS if not args.readers or r.name in args.readers.split(",")]
    warnings.simplefilter("ignore")  # third-party warnings (PIL's palette notes) are not what is measured
    signal.signal(signal.SIGALRM, _on_alarm)
    print(f"Machine: {machine_line()}", flush=True)
    for reader in chosen:  # warm-up: imports and caches, so the RSS growth below is the fuzz's own
        fuzz(reader, Tally(), 10)
    rows, failures, started = [], [], time.perf_counter()
    for reader in chosen:
        tally, t0 = Tally(), time.perf_counter()
        fuzz(reader, tally, args.examples)
        row = (f"| {reader.name} | {tally.cases:,} | {tally.errors:,} | {tally.accepted:,} | {tally.others} | "
               f"{tally.hangs} | {tally.slowest:.2f} | {tally.max_growth_mb:.1f} | {time.perf_counter() - t0:.0f} |")
        print(row, flush=True)
        rows.append(row)
        failures += tally.failures
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # hypothesis's own records included
    lines = ["# Fuzzing every input file aeopt reads (benchmarks/fuzz_inputs.py)", "",
             f"Machine: {machine_line()}. {seconds:.0f} s in all; peak memory of the whole process {peak_mb:.0f} MB.",
             "Inputs: tests/data/fuzz_cases.py (random bytes and mutations of valid files, a few KB each); "
             "the codec container is fuzzed by benchmarks/fuzz_codec.py. Every bug the fuzzing found is a fixed "
             "regression case in tests/data/test_fuzz_readers.py.", "",
             "| reader | cases | one-line AeoptError | accepted as valid | other exceptions | hangs "
             f"(> {MAX_SECONDS_PER_CASE} s) | slowest case s | max RSS growth of one case MB | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |", *rows, "",
             f"Failures (another exception, a multi-line message, a hang): **{len(failures)}**"]
    lines += [f"- {f}" for f in failures[:30]]
    lines.append("")
    if not args.readers:
        RESULTS.mkdir(exist_ok=True)
        atomic_write_text(RESULTS / "fuzz_inputs.md", "\n".join(lines))
    print("\n".join(lines))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
