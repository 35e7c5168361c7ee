"""`aeopt compress` and `aeopt decompress` (argparse and files; the coding is aeopt/codec/api.py).

compress RUN INPUT... --out DIR   one DIR/NAME.aec per input (PNG/JPEG image, or .npy: one image,
                                  or a batch (N, C, H, W) that becomes one many-image file)
compress RUN --data SPEC --out FILE.aec   every image of a dataset in one many-image file
decompress FILE.aec... --out DIR [--run RUN]   DIR/NAME.png (NAME_00000.png... for many images)

Without --run, decompress looks up the run in `aeopt-run.json` beside the files, which compress
writes (model id -> run directory). Everything is read and coded before anything is written, so
bad input leaves no partial output.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..errors import AeoptError
from ..runs import atomic_write_bytes, atomic_write_text
from .flags import add_common_flags, refuse_existing

RUN_RECORD = "aeopt-run.json"
PROGRESS_FROM = 64  # images: fewer finish before a progress bar would be worth drawing
NPY_SUFFIX = ".npy"


def add_commands(sub) -> None:
    extra = "it needs the codec extra, constriction's entropy coder: pip install 'aeopt[codec]'"
    p = sub.add_parser("compress", help="compress images into .aec files with a trained codec run",
                       description=f"Compress images into .aec files with a trained codec run ({extra}).")
    p.add_argument("run", metavar="RUN", help="a codec run directory (aeopt train --model codec)")
    p.add_argument("inputs", metavar="INPUT", nargs="*", help="PNG/JPEG images or .npy arrays")
    p.add_argument("--data", help="compress a whole dataset spec (e.g. fashion-mnist) into --out FILE.aec")
    p.add_argument("--split", default="all", choices=("all", "train", "val", "test"),
                   help="with --data: which split (default all)")
    p.add_argument("--out", required=True, help="output folder (inputs) or FILE.aec (--data)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="of the encoder's transforms: bf16 is meant for CPUs with bf16 matrix units (AMX; not "
                        "benchmarked yet); files decode bit-exactly either way (default fp32)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where the encoder's transforms (g_a, h_a) run; rounding, the integer hyper-decoder and the "
                        "coder stay on the CPU, so the files decode bit-exactly on any CPU (default cpu)")
    p.add_argument("--refine", type=int, default=0, metavar="STEPS",
                   help="search STEPS gradient steps per image for latents that cost fewer bytes at the same or "
                        "better quality (SGA; the decoder is unchanged; 100 steps: about 20 s for a 481x321 photo, "
                        "60 ms for a 28x28 image on 2 cores, codec_refined.md; default 0: plain rounding)")
    _common(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help="decode .aec files to PNG images",
                       description=f"Decode .aec files to PNG images ({extra}).")
    p.add_argument("files", metavar="FILE", nargs="+", help=".aec files")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--run", help="the codec run that wrote the files (default: the one recorded beside them)")
    _common(p)
    p.set_defaults(func=cmd_decompress)


def _common(p) -> None:
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="threads coding side by side: the slices of a many-image file, or separate files "
                        "(default: as many as torch may use, the physical cores; files do not depend on it)")
    add_common_flags(p)


def _bar(total: int, quiet: bool, slow: bool = False):
    if quiet or (total < PROGRESS_FROM and not slow):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", dynamic_ncols=True, file=sys.stderr)


def read_input(path: Path, channels: int) -> list[np.ndarray]:
    """uint8 (C, H, W) images from one input file."""
    from ..data.patches import read_image

    if not path.is_file():
        raise AeoptError(f"no such input file: {path}")
    if path.suffix.lower() == NPY_SUFFIX:
        try:
            x = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise AeoptError(f"{path} is not a readable .npy array ({str(err).splitlines()[0]})") from None
        if x.ndim == 2:
            x = x[None]
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise AeoptError(f"{path}: expected (H, W), (C, H, W) or (N, C, H, W), got shape {x.shape}")
        if x.dtype != np.uint8:
            x = x.astype(np.float32)
            if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
                raise AeoptError(f"{path}: float arrays must hold values in [0, 1] (or save uint8 pixels)")
            x = np.round(x * 255).astype(np.uint8)
        return list(x)
    return [read_image(path, "L" if channels == 1 else "RGB")]


def _check_free(paths: list[Path], overwrite: bool) -> None:
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise AeoptError("two inputs would write the same output name; rename one of them")
    for path in paths:
        refuse_existing(path, overwrite)


def _record_run(folder: Path, run) -> None:
    path = folder / RUN_RECORD
    record = {}
    if path.is_file():
        try:
            record = json.loads(path.read_text())
        except (ValueError, OSError):
            record = {}
    record[run.tables.short_id] = str(run.path.resolve())
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def cmd_compress(args) -> None:
    from ..codec.api import encode, load_codec
    from ..codec.evaluate import quality
    from ..codec.parallel import check_workers, in_parallel
    from ..codec.refine import check_steps

    run = load_codec(args.run, device=args.device)
    check_steps(args.refine)
    check_workers(args.workers)
    out = Path(args.out)
    if args.data and args.inputs:
        raise AeoptError("pass either INPUT files or --data SPEC, not both")
    if args.data:
        from ..data import load_data

        data = load_data(args.data)
        parts = {"train": [data.x_train], "val": [data.x_val], "test": [data.x_test]}
        tensors = parts.get(args.split) or [data.x_train, data.x_val, data.x_test]
        groups = {out.stem: [im for t in tensors for im in (t * 255).round().byte().numpy()]}
        targets = {out.stem: out}
        if out.suffix != ".aec":
            raise AeoptError(f"with --data, --out names one .aec file (got {out})")
    elif args.inputs:
        groups = {Path(p).stem: read_input(Path(p), run.channels) for p in args.inputs}
        if len(groups) != len(args.inputs):
            raise AeoptError("two inputs have the same name; their .aec files would collide")
        targets = {name: out / f"{name}.aec" for name in groups}
    else:
        raise AeoptError("nothing to compress: pass INPUT files or --data SPEC")
    _check_free(list(targets.values()), args.overwrite)
    images = [im for ims in groups.values() for im in ims]
    bar = _bar(len(images), args.quiet, slow=args.refine > 0)
    files, recon = {}, []

    def one_group(ims):  # inputs code side by side; a many-image group codes its slices side by side
        return encode(run, ims, reconstruct=True, progress=bar, precision=args.precision, refine=args.refine,
                      workers=1 if len(groups) > 1 else args.workers)

    try:
        for name, (sizes, stream, decoded) in zip(groups, in_parallel(one_group, list(groups.values()),
                                                                        args.workers)):
            files[name] = run.pack(sizes, stream)
            recon += decoded
    finally:
        if bar is not None:
            bar.close()
    folder = targets[next(iter(targets))].parent
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        atomic_write_bytes(targets[name], data)
    _record_run(folder, run)
    total = sum(len(d) for d in files.values())
    pixels = sum(im.shape[1] * im.shape[2] for im in images)
    psnr = quality(images, recon)["psnr"]
    print(f"compressed {len(images)} image(s) into {len(files)} file(s): {total:,} bytes, "
          f"{8 * total / pixels:.4f} bpp, PSNR {psnr:.2f} dB -> {folder if args.inputs else out}")


def _run_for(files: list[Path], given: str | None) -> str:
    if given:
        return given
    from ..codec.container import read_header

    runs = set()
    for f in files:
        record_path = f.parent / RUN_RECORD
        if not record_path.is_file():
            raise AeoptError(f"no --run given and no {RUN_RECORD} beside {f}; pass --run RUN")
        try:
            record = json.loads(record_path.read_text())
        except ValueError:
            raise AeoptError(f"{record_path} is damaged; pass --run RUN") from None
        model_id = read_header(f.read_bytes(), str(f))[2].hex()
        if model_id not in record:
            raise AeoptError(f"{f} was written by model {model_id}, which {record_path} does not list; pass --run RUN")
        runs.add(record[model_id])
    if len(runs) > 1:
        raise AeoptError("the files come from different codec runs; decompress each run's files separately")
    return runs.pop()


def cmd_decompress(args) -> None:
    from ..codec.api import decompress_files, load_codec
    from ..codec.parallel import check_workers

    check_workers(args.workers)
    paths = [Path(f) for f in args.files]
    for p in paths:
        if not p.is_file():
            raise AeoptError(f"no such file: {p}")
    run = load_codec(_run_for(paths, args.run))
    blobs = [p.read_bytes() for p in paths]
    count = sum(1 for _ in blobs)
    bar = _bar(count, args.quiet)
    try:
        decoded = decompress_files(run, blobs, names=[str(p) for p in paths], progress=bar, workers=args.workers)
    finally:
        if bar is not None:
            bar.close()
    out = Path(args.out)
    targets = []
    for p, images in zip(paths, decoded):
        if len(images) == 1:
            targets.append([(out / f"{p.stem}.png", images[0])])
        else:
            targets.append([(out / f"{p.stem}_{i:05d}.png", im) for i, im in enumerate(images)])
    flat = [t for group in targets for t in group]
    _check_free([t for t, _ in flat], args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    for target, image in flat:
        atomic_write_bytes(target, png_bytes(image))
    total = sum(len(b) for b in blobs)
    pixels = sum(im.shape[1] * im.shape[2] for _, im in flat)
    print(f"decompressed {len(flat)} image(s) from {len(paths)} file(s): {total:,} bytes, "
          f"{8 * total / pixels:.4f} bpp -> {out}")


def codec_line(test: dict) -> str:
    """The one-line summary of a codec run's test figures (train and evaluate print it)."""
    return (f"test: {test['images']} images, {test['bytes_per_image']:.1f} bytes/image (whole .aec files), "
            f"{test['bpp']:.4f} bpp, PSNR {test['psnr']:.2f} dB, MS-SSIM {test['ms_ssim']:.4f}")


def png_bytes(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)).save(buf, "PNG")
    return buf.getvalue()
