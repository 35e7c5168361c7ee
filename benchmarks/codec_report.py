"""Render benchmarks/results/codec.md and codec_rd.png from codec_fmnist.json / codec_photos.json."""
from __future__ import annotations

import json
import math
from pathlib import Path

from aeopt.runs import atomic_write_text

STYLE = {"JPEG": "s-", "WebP": "o-", "AVIF": "^-"}
ENTROPY = {"hyperprior": "scale hyperprior", "meanscale": "mean-scale hyperprior",
           "channelwise": "channel-wise mean-scale hyperprior (4 slices)", "factorized": "factorized prior"}


# what a photo family's recorded --precision meant ("auto": bf16 autocast on CPUs with bf16 hardware, the
# AMD EPYC's; fp32 elsewhere); families from before it was recorded say nothing
PRECISION = {"fp32": ", in fp32", "bf16": ", in bf16 autocast", "auto": ", precision auto (bf16 autocast on a CPU with "
             "bf16 hardware)"}


def _kind(family: dict, short: bool = False) -> str:
    """The family's entropy model in words, and its latent grid when that is the mean's."""
    kind = ENTROPY[family.get("entropy") or "hyperprior"]
    kind = kind.split(" (")[0] if short else kind
    return kind + (", mean grid" if family.get("latent_grid") == "mean" else "")


def _fmt(v, digits=1, unit=""):
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}{unit}"


def _rate_delta(peers, codec, ours) -> float | None:
    """Percent rate difference of one aeopt point against a peer's RD curve at the same PSNR."""
    import numpy as np

    pts = sorted((p["psnr"], math.log(p["bpp"])) for p in peers if p["codec"] == codec and math.isfinite(p["psnr"]))
    if len(pts) < 2 or not pts[0][0] <= ours["psnr"] <= pts[-1][0]:
        return None
    psnr, log_rate = zip(*pts)
    return 100 * (ours["bpp"] / math.exp(np.interp(ours["psnr"], psnr, log_rate)) - 1)


def _peer_rows(peers):
    return [f"| {p['codec']} | {p['setting'] if p['setting'] is not None else 'optimize'} | {p['bytes_per_image']:.1f} | "
            f"{p['bpp']:.4f} | {_fmt(p['psnr'], 2)} | {p['encode_ms_per_image']:.2f} | {p['decode_ms_per_image']:.2f} |"
            for p in peers]


def _figure(path: Path, fm: dict | None, ph: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, d) for name, d in (("Fashion-MNIST test", fm), ("BSDS500 test photos", ph)) if d]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 7.0), squeeze=False)
    for ax, (name, d) in zip(axes[0], panels):
        for codec, style in STYLE.items():
            pts = sorted((p["bpp"], p["psnr"]) for p in d["peers"] if p["codec"] == codec)
            if pts:
                ax.plot(*zip(*pts), style, label=codec, ms=4)
        for p in d["peers"]:
            if p["codec"] == "PNG":
                ax.axvline(p["bpp"], color="k", ls=":", lw=1, label=f"PNG lossless ({p['bpp']:.2f} bpp)")
        ours = sorted((o["bpp"], o["psnr"]) for o in d["aeopt"])
        first = (d.get("families") or [{}])[0]
        name_first = f"aeopt {first['prefix']}, {_kind(first, short=True)}" if first.get("entropy") else "aeopt"
        ax.plot(*zip(*ours), "D-", color="C3", label=f"{name_first} (one file per image)", ms=5)
        if "batch_bpp" in d["aeopt"][0]:
            batch = sorted((o["batch_bpp"], o["psnr"]) for o in d["aeopt"])
            ax.plot(*zip(*batch), "D--", color="C3", alpha=0.5, label=f"{name_first} (one many-image file)", ms=4)
        for k, f in enumerate((d.get("families") or [])[1:]):  # the other families beside the first
            pts = sorted((o["bpp"], o["psnr"]) for o in f["points"])
            kind = _kind(f, short=True)
            ax.plot(*zip(*pts), "v-", color=f"C{4 + k}", label=f"aeopt {f['prefix']}, {kind} (one file per image)",
                    ms=4)
        ax.set_title(f"{name} ({d['test_images' if 'test_images' in d else 'test']} images, whole files)", fontsize=9)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
        # below the axes: a legend inside covered aeopt's own points, whichever corner it took
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13))
        if name.startswith("Fashion"):
            ax.set_xlim(0, 5.5)
        else:
            ax.set_xlim(0, 2.5)
    fig.tight_layout()
    from aeopt.evaluate.figures import figure_bytes
    from aeopt.runs import atomic_write_bytes

    atomic_write_bytes(path, figure_bytes(fig, dpi=120))  # a killed report leaves the old figure, not half a PNG
    plt.close(fig)


def _fm_training(fm: dict, precision: str | None = None, unit: str = " per lambda") -> str:
    """How the Fashion-MNIST codecs trained, from the stages recorded per lambda (the first lambda's)."""
    stages = fm["aeopt"][0].get("stages")
    if not stages:
        return f"{fm['aeopt'][0]['epochs']} epochs{unit}"
    autocast = f", {precision} autocast" if precision in ("bf16", "fp16") else ""
    parts = [f"{st['epochs']} epochs {st['optimizer']} lr {st['lr']:g} (weight decay {st['weight_decay']:g}, "
             f"{st['schedule']}{autocast}){_stage_change(stages, i)}" for i, st in enumerate(stages)]
    total = sum(st["epochs"] for st in stages)
    return f"{total} epochs{unit}: " + ", then from those weights ".join(parts)


def _stage_change(stages: list[dict], i: int) -> str:
    """What stage i trained differently: another lambda than the run's own, residual units grown in."""
    st, notes = stages[i], []
    if st.get("lmbda") is not None and st["lmbda"] != stages[-1].get("lmbda"):
        notes.append(f"at lambda {st['lmbda']:g}")
    if i and _units(st) != _units(stages[i - 1]):
        notes.append(f"with{_units(st)[1:]} added")
    return f" {', '.join(notes)}" if notes else ""


def _vs_webp(peers: list[dict], o: dict) -> str:
    """A point's rate against WebP's curve at its PSNR, one file each / one many-image file: where along
    the curve the BD-rate (an average over the PSNR range) is won or lost."""
    each = _rate_delta(peers, "WebP", o)
    batch = _rate_delta(peers, "WebP", {"bpp": o["batch_bpp"], "psnr": o["psnr"]})
    return f"{_fmt(each, 0, '%')} / {_fmt(batch, 0, '%')}"


def _family_rows(points: list[dict], peers: list[dict], tiers: bool = False) -> list[str]:
    """One row per lambda; a tiered family's rows also say which run (and shape) each lambda uses."""
    extra = " run | width / latent / hyperprior (+ residual units g_a / g_s) | parameters |" if tiers else ""

    def run_cells(o: dict) -> str:
        if not tiers:
            return ""
        run = o["run"] + (" (carried)" if o.get("carried_from") else "")
        return f" {run} | {o['width']} / {o['latent']} / {o['hyper_width']}{_units(o, short=True)} | {o['params']:,} |"

    return ["| lambda |" + extra + " bytes/image (one file each) | bytes/image (one many-image file) | bpp | PSNR dB | "
            "MS-SSIM | vs WebP at this PSNR (file each / many-image) | epochs | train s |",
            "| --- |" + " --- |" * (extra.count("|") + 8)] + [
        f"| {o['lmbda']:g} |{run_cells(o)} {o['bytes_per_image']:.1f} | {o['batch_bytes_per_image']:.1f} | "
        f"{o['bpp']:.4f} | {o['psnr']:.2f} | {o['ms_ssim']:.4f} | {_vs_webp(peers, o)} | {o['epochs']} | "
        f"{o['train_seconds']:.0f} |" for o in points]


def _tiers_lines(f: dict, fm: dict) -> list[str]:
    """A family with a model per lambda: what it is, how each run trained, which points were carried."""
    lines = [f"aeopt, `{f['prefix']}`: {_kind(f)}, one model per lambda (the wider ones at the higher "
             f"lambdas, as published codecs size theirs), measured on {fm['test_images']:,} test images; "
             "each run trained on the 55k training images (one thread, batch 64):", ""]
    for o in f["points"]:
        autocast = o.get("precision") if o.get("precision") in ("bf16", "fp16") else "fp32"
        where = (f" Carried from an earlier run ({o['carried_from']}): {o['derived']}." if o.get("derived") else
                 f" Carried from an earlier run ({o['carried_from']})." if o.get("carried_from") else
                 f" Measured in this run; its largest file {o['max_file_bytes']} bytes." if o.get("max_file_bytes")
                 else "")
        lines.append(f"- lambda {o['lmbda']:g}, `{o['run']}`: width {o['width']}, latent {o['latent']}, hyperprior "
                     f"width {o['hyper_width']}{_units(o)}, {o['params']:,} parameters, {autocast}, "
                     f"{_fm_training({'aeopt': [o]}, unit='')}.{where}")
    return lines + [""]


def _units(o: dict, short: bool = False) -> str:
    """A run's residual units in g_a / g_s (--blocks / --decoder-blocks), or nothing when it has none."""
    if not (o.get("blocks") or o.get("decoder_blocks")):
        return ""
    if short:
        return f" + {o.get('blocks', 0)} / {o.get('decoder_blocks', 0)} res."
    return f", {o.get('blocks', 0)} residual units in g_a and {o.get('decoder_blocks', 0)} in g_s"


def _family_name(f: dict) -> str:
    return f"width {f['width']}, latent {f['latent']}, hyperprior width {f['hyper_width']}"


def _carried_note(f: dict) -> str:
    if not f.get("carried_from"):
        return ""
    return (f" Measured in an earlier run ({f['carried_from']}) and carried over, not re-measured: sizes and "
            "PSNRs are exact, so they stand beside this run's; its throughput is not in this run's timing.")


def _fastest_webp(peers: list[dict]) -> dict[int, float]:
    """Per core count, WebP's images/s by its faster pool (threads or processes)."""
    webp: dict[int, float] = {}
    for p in peers:
        if p["codec"] == "WebP":
            webp[p.get("workers", 1)] = max(webp.get(p.get("workers", 1), 0.0), p["images_per_s"])
    return webp


def _fm_section(fm: dict) -> list[str]:
    families = fm.get("families") or [{"prefix": "fm", "width": fm["settings"]["width"],
                                       "latent": fm["settings"]["latent"], "hyper_width": fm["settings"]["width"],
                                       "points": fm["aeopt"], "bd_rate_per_file": fm["bd_rate_per_file"],
                                       "bd_rate_batch_file": fm["bd_rate_batch_file"]}]
    lines = ["## Fashion-MNIST", "",
             f"Machine: {fm['machine']}. Load average before {fm['load_before'][0]:.1f}, after "
             f"{fm['load_after'][0]:.1f} (the machine is shared).", ""]
    for k, f in enumerate(families):
        if f.get("entropy"):
            what = f"`{f['prefix']}`: {_kind(f)}"
        else:  # runs measured before families recorded their entropy model: the default first, then the fast one
            what = ("the default model" if k == 0 else f"`{f['prefix']}`, the fast model") + ": scale hyperprior"
        if f.get("tiers"):
            lines += _tiers_lines(f, fm) + _family_rows(f["points"], fm["peers"], tiers=True) + [""]
            continue
        sizes = ("" if f["points"][0].get("format", 3) >= 4 else
                 " One-file sizes as measured in format 3 (format 4 writes each file under 256 bytes 2 bytes smaller).")
        lines += [f"aeopt, {what}, {_family_name(f)}, {f['points'][0]['params']:,} parameters, "
                  f"trained {_fm_training({'aeopt': f['points']}, f.get('precision'))} on the 55k training images "
                  "(one thread, batch 64); "
                  f"tested on {fm['test_images']:,} test images." + _carried_note(f) + sizes, ""] + _family_rows(f["points"], fm["peers"]) + [""]
    lines += ["Peers on the same images:", "",
              "| codec | setting | bytes/image | bpp | PSNR dB | encode ms | decode ms |",
              "| --- | --- | --- | --- | --- | --- | --- |"] + _peer_rows(fm["peers"])
    head = " | ".join(f"{f['prefix']}: one file per image | {f['prefix']}: one many-image file" for f in families)
    lines += ["", f"| BD-rate of aeopt vs | {head} |", "| --- |" + " --- |" * (2 * len(families))]
    lines += [f"| {c} | " + " | ".join(f"{_fmt(f['bd_rate_per_file'][c], unit='%')} | "
                                       f"{_fmt(f['bd_rate_batch_file'][c], unit='%')}" for f in families) + " |"
              for c in families[0]["bd_rate_per_file"]]
    webp0 = next(p for p in fm["peers"] if p["codec"] == "WebP" and p["setting"] == 0)
    for f in families:
        beat = [o for o in f["points"] if o["bytes_per_image"] < webp0["bytes_per_image"] and o["psnr"] >= webp0["psnr"]]
        lines += ["", f"WebP's smallest file (q0): {webp0['bytes_per_image']:.1f} B at {webp0['psnr']:.2f} dB. "
                  f"{f['prefix']} " + ("points smaller at equal or better PSNR: " + ", ".join(
                      f"lambda {o['lmbda']:g} ({o['bytes_per_image']:.1f} B, {o['psnr']:.2f} dB)" for o in beat)
                      if beat else "has no point that is smaller at equal or better PSNR") + "."]
    t = fm["timing"]
    again = (f" Re-measured by `codec.py fmnist-timing` on {t['machine']}, load average before "
             f"{t['load_before'][0]:.1f}, after {t['load_after'][0]:.1f}." if t.get("machine") else
             f" Measured in an earlier run on {t['measured_on']}, not in this one." if t.get("measured_on") else "")
    rounds = (f" Each row is the median of {len(t['rounds'])} rounds, aeopt and the peers interleaved."
              if t.get("rounds") else "")
    lines += ["", f"Batch mode throughput ({fm['test_images']:,} images, encode then decode; aeopt lambda "
              f"{t['aeopt_lmbda']:g}, one many-image file; a worker is one core: torch and BLAS get one thread "
              f"each; the peers code one file per image).{again}{rounds}", "",
              "| codec | cores | encode ms/image | decode ms/image | images/s (encode + decode) |",
              "| --- | --- | --- | --- | --- |"]
    for a in t["aeopt"]:
        cores = a.get("workers", a.get("threads"))
        lines.append(f"| aeopt {a.get('model', '')} | {cores} | {a['encode_ms']:.3f} | {a['decode_ms']:.3f} | "
                     f"{a['images_per_s']:.0f} |")
    for p in t["peers"]:
        how = f" ({p['pool']})" if p.get("pool") else ""
        lines.append(f"| {p['codec']} q{p['setting']} | {p.get('workers', 1)}{how} | {p['encode_ms']:.3f} | "
                     f"{p['decode_ms']:.3f} | {p['images_per_s']:.0f} |")
    webp = _fastest_webp(t["peers"])
    ratios = [f"{a.get('model', 'aeopt')} on {a['workers']} core{'s' if a['workers'] > 1 else ''} "
              f"{a['images_per_s'] / webp[a['workers']]:.2f}x" for a in t["aeopt"] if a.get("workers") in webp]
    if ratios:
        lines += ["", "aeopt / WebP's fastest way on as many cores: " + ", ".join(ratios) + "."]
    for k, r in enumerate(t.get("rounds") or []):
        best = _fastest_webp(r["peers"])
        lines.append(f"Round {k + 1}: " + ", ".join(
            f"{a['model']} on {a['workers']} {a['images_per_s']:.0f}/s vs WebP {best[a['workers']]:.0f}/s"
            for a in r["aeopt"] if a.get("workers") in best) + ".")
    return lines + [""]


def _photo_families(ph: dict) -> list[dict]:
    """The photo families, the measured one first; a file from before families is one scale hyperprior."""
    s = ph["settings"]
    return ph.get("families") or [{"prefix": s["runs"], "entropy": "hyperprior", "width": s["width"],
                                   "latent": s["latent"], "params": ph["params"], "points": ph["aeopt"],
                                   "bd_rate": ph["bd_rate"]}]


def _photo_section(ph: dict) -> list[str]:
    s = ph["settings"]
    lines = ["## Photographs (BSDS500)", "",
             f"Machine: {ph['machine']}. Load average before {ph['load_before'][0]:.1f}, after "
             f"{ph['load_after'][0]:.1f}.", "",
             "aeopt trained on 1 CPU thread per run on random crops of the 300 train + val photos, for minutes, "
             "not the days on GPUs published models get: read it as where a short CPU run lands, not what the architecture can do. A run warm-started from another "
             "started from its weights; its time and steps include the other's.", ""]
    for f in _photo_families(ph):
        carried = (f" Measured in an earlier run ({f['carried_from']}) on the same {ph['test_images']} photos and "
                   "carried over, not re-measured: sizes and PSNRs are exact; its BD-rates are against this run's "
                   "peers." if f.get("carried_from") else "")
        crops = f.get("patch") or s["patch"], f.get("batch") or s["batch"]
        lines += [f"`{f['prefix']}`: {_kind(f)}, width {f['width']}, latent {f['latent']}, {f['params']:,} "
                  f"parameters, trained on {crops[0]}x{crops[0]} crops in batches of {crops[1]}"
                  f"{PRECISION.get(f.get('precision'), '')}. Test "
                  f"({ph['test_images']} photos, one .aec file each, every byte counted).{carried}", "",
                  "| run | lambda | trained | bpp | PSNR dB | MS-SSIM | encode ms | decode ms |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {o['run']} | {o['lmbda']:g} | {o['train_seconds'] / 60:.0f} min, {o['steps']:,} steps"
                  f"{' (warm start: ' + o['init'] + ')' if o.get('init') else ''} | {o['bpp']:.4f} | {o['psnr']:.2f} | "
                  f"{o['ms_ssim']:.4f} | {o['encode_ms']:.0f} | {o['decode_ms']:.0f} |" for o in f["points"]]
        lines += ["", f"BD-rate of `{f['prefix']}` vs: " + ", ".join(
            f"{c} {_fmt(v, unit='%')}" for c, v in f["bd_rate"].items())
            + " (positive: aeopt needs more bits at equal PSNR; n/a: no common PSNR range).", ""]
    lines += ["Peers on the same photos:", "", "| codec | setting | bytes/image | bpp | PSNR dB | encode ms | decode ms |",
              "| --- | --- | --- | --- | --- | --- | --- |"] + _peer_rows(ph["peers"])
    b = ph["photo_768x512"]
    lines += ["", f"A 768x512 photo ({_photo_families(ph)[0]['points'][0]['run']}): encode {b['encode_s']:.2f} s + "
              f"decode {b['decode_s']:.2f} s = {b['encode_s'] + b['decode_s']:.2f} s on {b['threads']} threads "
              f"({b['bytes']:,} bytes).", ""]
    return lines


# The targets (#14), as the summary at the top of codec.md checks them.
FM_BD_TARGET = -66.0       # BD-rate vs WebP, one file per image, percent
PHOTO_BD_TARGET = 0.0      # BD-rate vs WebP on the BSDS500 test photos, percent (below it)
PHOTO_TRAIN_BUDGET_S = 7200  # ... within two hours of training
PHOTO_768_BUDGET_S = 1.0   # a 768x512 photo's encode + decode on 2 cores


def _yes(ok: bool) -> str:
    return "**yes**" if ok else "no"


def _targets_section(fm: dict | None, ph: dict | None) -> list[str]:
    """The issue's targets against this file's own figures, one row each: the summary a reader wants
    before the tables (every figure is recomputed from the JSON, so a re-render keeps it true)."""
    rows = []
    if fm:
        head = (fm.get("families") or [{}])[0]
        per_file, batch = fm["bd_rate_per_file"]["WebP"], fm["bd_rate_batch_file"]["WebP"]
        name = head.get("prefix", "aeopt")
        rows.append(f"| Fashion-MNIST: BD-rate vs WebP <= {FM_BD_TARGET:.0f}% (one file per image) | {name}: "
                    f"{per_file:+.1f}% (one many-image file {batch:+.1f}%) | {_yes(per_file <= FM_BD_TARGET)} |")
        webp0 = next(p for p in fm["peers"] if p["codec"] == "WebP" and p["setting"] == 0)
        beat = sorted((o for o in fm["aeopt"] if o["bytes_per_image"] < webp0["bytes_per_image"]
                       and o["psnr"] >= webp0["psnr"]), key=lambda o: o["bytes_per_image"])
        smallest = (f"{len(beat)} of its points; the smallest {beat[0]['bytes_per_image']:.1f} B at "
                    f"{beat[0]['psnr']:.2f} dB" if beat else "none of its points")
        rows.append(f"| Fashion-MNIST: smaller than WebP's smallest file ({webp0['bytes_per_image']:.1f} B at "
                    f"{webp0['psnr']:.2f} dB) at equal or better PSNR | {name}: {smallest} | {_yes(bool(beat))} |")
        timing = fm["timing"]
        webp = _fastest_webp(timing["peers"])
        ratios = {(a["model"], a["workers"]): a["images_per_s"] / webp[a["workers"]]
                  for a in timing["aeopt"] if a.get("model") and a.get("workers") in webp}
        if ratios:
            said = ", ".join(f"{m} {r:.2f}x on {w} core{'s' if w > 1 else ''}" for (m, w), r in ratios.items())
            slowest: dict[str, float] = {}  # a model meets it only on every core count measured
            for (model, _), r in ratios.items():
                slowest[model] = min(r, slowest.get(model, r))
            fast = [model for model, r in slowest.items() if r >= 1]
            rows.append(f"| Fashion-MNIST: encode + decode throughput >= WebP's (batch mode, same run) | {said} "
                        f"({timing.get('machine', 'see the table')}) | "
                        f"{_yes(bool(fast))}{' (' + ', '.join(fast) + ')' if fast else ''} |")
    if ph:
        timely = [f for f in _photo_families(ph) if all(o["train_seconds"] <= PHOTO_TRAIN_BUDGET_S for o in f["points"])]
        if timely:
            best = min(timely, key=lambda f: f["bd_rate"]["WebP"])
            bd = best["bd_rate"]["WebP"]
            minutes = max(o["train_seconds"] for o in best["points"]) / 60
            rows.append(f"| Photos (BSDS500 test): BD-rate vs WebP < {PHOTO_BD_TARGET:.0f}% after <= 2 h of "
                        f"training | best of {len(timely)} families: `{best['prefix']}` {bd:+.1f}% ({minutes:.0f} min "
                        f"on {(best.get('carried_from') or ph['machine']).split(',')[0]}; AVIF "
                        f"{best['bd_rate']['AVIF']:+.1f}%) | {_yes(bd < PHOTO_BD_TARGET)} |")
        b = ph["photo_768x512"]
        total = b["encode_s"] + b["decode_s"]
        rows.append(f"| A 768x512 photo: encode + decode <= {PHOTO_768_BUDGET_S:.0f} s on 2 cores | {total:.2f} s "
                    f"({b['threads']} threads) | {_yes(total <= PHOTO_768_BUDGET_S and b['threads'] <= 2)} |")
    if not rows:
        return []
    return ["## Where it stands", "", "Issue #14's targets against the figures below (plain encoder; "
            "encode-time refinement in codec_refined.md). Each row names the family it is read from: the "
            "fastest family is not always the smallest.", "",
            "| target | here | met |", "| --- | --- | --- |"] + rows + [""]


def write_report(results: Path, note: str = "") -> None:
    fm_path, ph_path = results / "codec_fmnist.json", results / "codec_photos.json"
    fm = json.loads(fm_path.read_text()) if fm_path.is_file() else None
    ph = json.loads(ph_path.read_text()) if ph_path.is_file() else None
    lines = ["# Learned codec vs PNG / JPEG / WebP / AVIF (whole files, every header counted)", "",
             "`benchmarks/codec.py` (fmnist, photos, report). PSNR from the mean MSE over all test pixels "
             "(peak 255); bpp = 8 x file bytes / pixels. BD-rate: Bjøntegaard delta rate with PCHIP "
             "interpolation over the PSNR range both curves cover (negative = aeopt needs fewer bytes).", ""]
    lines += _targets_section(fm, ph)
    if fm:
        lines += _fm_section(fm)
    if ph:
        lines += _photo_section(ph)
    lines += ["![RD curves](codec_rd.png)", ""]
    for name in ("codec_strip_fmnist.png", "codec_strip_photos.png"):
        if (results / name).is_file():
            lines += [f"![original, aeopt, WebP and JPEG at about the same size]({name})", ""]
    if note:  # the runs' history: long, so after the figures it explains rather than before them
        lines += ["## How these runs were made", "", note, ""]
    atomic_write_text(results / "codec.md", "\n".join(lines))
    _figure(results / "codec_rd.png", fm, ph)
