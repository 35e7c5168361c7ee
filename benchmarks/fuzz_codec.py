"""Property-based fuzzing of `aeopt decompress` input: >= 10,000 hostile files, each must give one
AeoptError line (or, behind a valid checksum, some images), never another exception, a hang or a
large allocation.

  python benchmarks/fuzz_codec.py [--examples 2500] [--run RUN]     # 4 x 2,500 = 10,000 cases

Without --run it trains a tiny codec (--entropy, channel-wise by default) on digits first (~20 s). Seeds include files of 3
slices with each check (slices shrunk to 3 images for the run): version 4 (under 256 bytes, CRC-16)
and version 3 (CRC-32). Four families of input,
`--examples` each: random bytes (bare, after the magic, and resealed with a valid checksum),
mutations of real files (bit flips, truncations, insertions), damage behind a valid checksum
(reaches the range decoder and the integer h_s), and random headers with valid checksums.
Writes benchmarks/results/fuzz_codec.md.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_line  # noqa: E402

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import aeopt  # noqa: E402
from aeopt.codec import compress, container, decompress_images, load_codec  # noqa: E402
from aeopt.errors import AeoptError  # noqa: E402
from aeopt.runs import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MAX_SECONDS_PER_CASE = 2.0


def _tiny_run(root: Path, entropy: str) -> Path:
    aeopt.train(data="digits", model="codec", entropy=entropy, lmbda=0.05, latent_dim=8, width=16, epochs=3,
                batch_size=16, lr=1e-2, threads=1, out=str(root / "run"), progress=False, log=lambda m: None)
    return root / "run"


class Tally:
    def __init__(self):
        self.cases = self.errors = self.decoded = self.passed_short_check = 0
        self.slowest = 0.0
        self.failures: list[str] = []

    def check(self, run, blob: bytes, may_decode: bool, may_pass_check: bool = False) -> None:
        self.cases += 1
        started = time.perf_counter()
        try:
            images = decompress_images(run, blob)
        except AeoptError as err:
            self.errors += 1
            if "\n" in str(err) or not str(err):
                self.failures.append(f"multi-line or empty message: {str(err)[:100]!r}")
        except Exception as err:  # noqa: BLE001  (the point: anything else is a bug)
            self.failures.append(f"{type(err).__name__}: {str(err)[:100]} on {blob[:24].hex()}")
        else:
            self.decoded += 1
            if not may_decode and may_pass_check:
                self.passed_short_check += 1
            elif not may_decode:
                self.failures.append(f"decoded a file that should have been refused: {blob[:24].hex()}")
            elif not all(im.dtype == np.uint8 for im in images):
                self.failures.append("decoded images are not uint8")
        self.slowest = max(self.slowest, time.perf_counter() - started)




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2_500, help="cases per family (four families)")
    parser.add_argument("--run", help="a codec run (default: train a tiny one on digits)")
    parser.add_argument("--entropy", default="channelwise",
                        help="the tiny run's entropy model (channel-wise: the decoder computes rows from what it decoded)")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    run = load_codec(args.run or _tiny_run(Path(tmp.name), args.entropy))
    fp = run.tables.fingerprint
    rng = np.random.default_rng(0)
    # slices of 3 images, so a 7-image seed is a version 3 file of 3 slices (1,024 would need big, slow seeds)
    container.SLICE_IMAGES = 3
    seeds = [compress(run, (rng.random((1, 8, 8)) * 255).astype(np.uint8)),
             compress(run, (rng.random((5, 1, 8, 8)) * 255).astype(np.uint8)),
             compress(run, [(rng.random((1, h, w)) * 255).astype(np.uint8) for h, w in ((8, 8), (13, 5), (8, 8))]),
             compress(run, (rng.random((7, 1, 8, 8)) * 255).astype(np.uint8)),
             compress(run, (rng.random((7, 1, 24, 24)) * 255).astype(np.uint8))]
    # both kinds of check: 3 slices under 256 bytes (version 4, CRC-16) and over (version 3, CRC-32)
    assert seeds[-2][2] >> 4 == 4 and seeds[-1][2] >> 4 == 3 and len(seeds[-1]) > container.SHORT_CHECK_BELOW
    tally = {name: Tally() for name in ("random", "mutated", "behind-checksum", "random-header")}
    common = settings(max_examples=args.examples, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
    started = time.perf_counter()

    @common
    @given(st.binary(max_size=200), st.sampled_from(["bare", "magic", "resealed"]))
    def random_bytes(data, how):
        blob = {"bare": data, "magic": container.MAGIC + data,
                "resealed": container.seal(
                    container.MAGIC + bytes([0x10 | (data[:1] or b"\0")[0] & 7]) + fp[:2] + data[1:], fp)}[how]
        tally["random"].check(run, blob, may_decode=how == "resealed")

    @common
    @given(st.sampled_from(seeds), st.sampled_from(["flip", "truncate", "insert", "delete"]), st.data())
    def mutated(seed, kind, data):
        blob = bytearray(seed)
        flips = data.draw(st.integers(1, 4)) if kind == "flip" else 0
        if kind == "flip":
            for _ in range(flips):
                blob[data.draw(st.integers(0, len(blob) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "truncate":
            blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
        elif kind == "insert":
            pos = data.draw(st.integers(0, len(blob)))
            blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        else:
            pos = data.draw(st.integers(0, len(blob) - 1))
            del blob[pos:pos + data.draw(st.integers(1, 8))]
        # a flip undone by a second decodes; a short file's 2-byte check catches every flip of 1 to 3 bits
        # and lets other damage through with probability 2**-16 (counted apart: "passed the short check")
        short = bool(seed[2] & container.FLAG_SHORT_CHECK) and not 1 <= flips <= 3
        tally["mutated"].check(run, bytes(blob), may_decode=bytes(blob) == seed, may_pass_check=short)

    @common
    @given(st.sampled_from(seeds), st.data())
    def behind_checksum(seed, data):
        body = bytearray(seed[:-container.check_bytes(seed[2])])
        for _ in range(data.draw(st.integers(1, 6))):
            body[data.draw(st.integers(container.HEADER_BYTES, len(body) - 1))] = data.draw(st.integers(0, 255))
        if data.draw(st.booleans()):
            body += data.draw(st.binary(max_size=64))
        tally["behind-checksum"].check(run, container.seal(bytes(body), fp), may_decode=True)

    @common
    @given(st.integers(1, 4), st.integers(0, 15), st.lists(st.integers(0, 2 ** 35), max_size=8), st.binary(max_size=64))
    def random_header(version, flags, numbers, stream):
        body = bytearray(container.MAGIC + bytes([version << 4 | flags]) + fp[:2])
        for v in numbers:
            body += container._varint(v)
        tally["random-header"].check(run, container.seal(bytes(body) + stream, fp), may_decode=True)

    for test in (random_bytes, mutated, behind_checksum, random_header):
        test()
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = sum(t.cases for t in tally.values())
    failures = [f for t in tally.values() for f in t.failures]
    lines = ["# Fuzzing `aeopt decompress` input (benchmarks/fuzz_codec.py)", "",
             f"Machine: {machine_line()}. {total:,} cases in {seconds:.0f} s; peak memory of the whole process "
             f"{peak_mb:.0f} MB ({'the run ' + args.run if args.run else 'tiny digits codec, 8x8 grey'}, "
             f"entropy model {run.model.entropy}).", "",
             "| family | cases | one-line AeoptError | decoded (behind a valid checksum) | slowest case s |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {t.cases:,} | {t.errors:,} | {t.decoded:,} | {t.slowest:.3f} |" for name, t in tally.items()]
    passed = sum(t.passed_short_check for t in tally.values())
    lines += ["", f"Mutated short files (under {container.SHORT_CHECK_BELOW} bytes: a 2-byte CRC-16) that passed "
              f"their check and decoded, which it allows with probability 2**-16 for damage beyond 3 flipped bits: "
              f"{passed:,}"]
    lines += ["", f"Failures (any other exception, a multi-line message, a mutated file accepted): **{len(failures)}**"]
    lines += [f"- {f}" for f in failures[:20]]
    lines.append("")
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / "fuzz_codec.md", "\n".join(lines))
    print("\n".join(lines))
    if failures or max(t.slowest for t in tally.values()) > MAX_SECONDS_PER_CASE:
        sys.exit(1)


if __name__ == "__main__":
    main()
