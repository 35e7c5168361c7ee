"""Anomaly detection: aeopt's AutoencoderDetector against PyOD and scikit-learn, every peer in one run.

1. One-class images (Fashion-MNIST, digits): for each class c, fit on class c's training images
   only, score the test set (anomaly = any other class); AUROC per class, mean, fit seconds per
   class. Peers: PyOD AutoEncoder (defaults), PyOD DeepSVDD (epochs set by --svdd-epochs: its
   default 100 would take longer than all the others together on 2 cores), PCA-32 reconstruction
   error (PCA-16 on 64-pixel digits), IsolationForest.
2. ODDS tables: fit on a stratified 60% split that contains the anomalies, score the other 40%,
   seeds 0..n-1, features standardized on the training split; AUROC per set and mean. Peers:
   IsolationForest, PyOD KNN, PyOD PCA, PyOD AutoEncoder. For aeopt also the test F1 of its
   threshold with contamination = the true share vs "auto", and the robust (trimmed) option.

Run under the benchmark lock:
  flock /tmp/aeopt-bench.lock python benchmarks/detect.py --out benchmarks/results/detect.md
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from aeopt.data import load_data  # noqa: E402
from aeopt.detect import AutoencoderDetector  # noqa: E402
from aeopt.detect.scores import Scorer  # noqa: E402
from aeopt.detect.thresholds import auto_threshold  # noqa: E402
from aeopt.runs import atomic_write_text  # noqa: E402
from benchmarks.common import machine_line  # noqa: E402

ODDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "odds"
ODDS_SETS = ("arrhythmia", "cardio", "ionosphere", "letter", "pima", "satellite", "shuttle", "wbc")
# (score, recon, feature map in combined, gradients part in combined): rows scored on the same trained model
SCORE_VARIANTS = (("recon", "mse", False, False), ("recon", "ssim", False, False), ("latent", "mse", False, False),
                  ("combined", "mse", False, False), ("combined", "ssim", False, False),
                  ("combined", "mse", True, False), ("combined", "ssim", True, False),
                  ("combined", "mse", True, True), ("combined", "ssim", True, True), ("forest", "mse", False, False))


def flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


def finite(s: np.ndarray) -> np.ndarray:
    """PyOD's PCA divides by near-zero explained variances on some sets: inf ranks as the highest score."""
    s = np.asarray(s, dtype=np.float64)
    ok = np.isfinite(s)
    top = s[ok].max() if ok.any() else 0.0
    return np.where(ok, s, top + 1.0)


# --- peers: fit on train, return (test scores, fit seconds); higher = more abnormal ----------------
def peer_pyod_ae(xtr, xte, seed):
    from pyod.models.auto_encoder import AutoEncoder

    m = AutoEncoder(verbose=0, random_state=seed)
    t = time.perf_counter()
    m.fit(flat(xtr))
    return m.decision_function(flat(xte)), time.perf_counter() - t


def peer_deepsvdd(xtr, xte, seed, epochs):
    from pyod.models.deep_svdd import DeepSVDD

    m = DeepSVDD(n_features=flat(xtr).shape[1], epochs=epochs, verbose=0, random_state=seed)
    t = time.perf_counter()
    m.fit(flat(xtr))
    return m.decision_function(flat(xte)), time.perf_counter() - t


def peer_pca(xtr, xte, seed, k):
    from sklearn.decomposition import PCA

    t = time.perf_counter()
    p = PCA(min(k, *flat(xtr).shape), random_state=seed).fit(flat(xtr))
    seconds = time.perf_counter() - t
    f = flat(xte)
    return ((p.inverse_transform(p.transform(f)) - f) ** 2).mean(1), seconds


def peer_iforest(xtr, xte, seed):
    from sklearn.ensemble import IsolationForest

    t = time.perf_counter()
    m = IsolationForest(random_state=seed).fit(flat(xtr))
    return -m.score_samples(flat(xte)), time.perf_counter() - t


def peer_hog_knn(xtr, xte, seed):
    """aeopt's gradients part alone (no autoencoder): k-NN (k = 5) on orientation histograms."""
    from aeopt.detect.gradients import orientation_histograms
    from aeopt.detect.scores import knn_distance

    t = time.perf_counter()
    reference = orientation_histograms(torch.from_numpy(xtr).float().reshape(len(xtr), -1, *xtr.shape[-2:]))
    fit_s = time.perf_counter() - t
    query = orientation_histograms(torch.from_numpy(xte).float().reshape(len(xte), -1, *xte.shape[-2:]))
    return knn_distance(query, reference, 5, exclude_self=False), fit_s


def peer_pyod(name):
    def run(xtr, xte, seed):
        if name == "knn":
            from pyod.models.knn import KNN as Model
        else:
            from pyod.models.pca import PCA as Model
        t = time.perf_counter()
        m = Model().fit(xtr)
        return m.decision_function(xte), time.perf_counter() - t
    return run


def aeopt_fit(xtr, seed, **kw):
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = AutoencoderDetector(seed=seed, **kw).fit(xtr)
    return det, time.perf_counter() - t


def score_variants(det, xtr, xte, yte, variants) -> dict[str, float]:
    """AUROC of each score on the same trained model (scores are cheap, training is not)."""
    out = {}
    xtr_t = det._samples(xtr, reset=False)
    xte_t = det._samples(xte, reset=False)
    for score, recon, features, gradients in variants:
        if (recon == "ssim" or features or gradients) and xtr_t.dim() != 4:
            continue
        sc = Scorer(score, recon, "knn", det.n_neighbors, features=features, gradients=gradients)
        sc.fit(det.model_, xtr_t)
        label = f"{score}-{recon}" + (" + feature map" if features else " (no feature map)" if score == "combined" else "")
        label += " + gradients" if gradients else ""
        out[label] = roc_auc_score(yte, sc(det.model_, xte_t))
    return out


def extra_detectors(args) -> list[tuple[str, dict]]:
    """--aeopt LABEL=JSON: more aeopt settings in the same run, e.g. mlp='{"model": "mlp"}'."""
    import json

    return [(label, json.loads(params)) for label, _, params in (a.partition("=") for a in args.aeopt or [])]


# --- 1. one-class images -------------------------------------------------------------------------
def one_class(name: str, args) -> list[str]:
    ds = load_data(name)
    xa, ya = ds.x_train.numpy(), ds.y_train.numpy()
    xte, yc = ds.x_test.numpy(), ds.y_test.numpy()
    if args.limit_test and len(xte) > args.limit_test:
        keep = np.random.default_rng(0).permutation(len(xte))[:args.limit_test]
        xte, yc = xte[keep], yc[keep]
    k = 16 if xa.shape[-1] <= 8 else 32
    classes = [int(c) for c in args.classes.split(",")] if args.classes else sorted(set(ya.tolist()))
    peers = {"PyOD AutoEncoder": peer_pyod_ae,
             f"PyOD DeepSVDD ({args.svdd_epochs} ep)": lambda a, b, s: peer_deepsvdd(a, b, s, args.svdd_epochs),
             f"PCA-{k}": lambda a, b, s: peer_pca(a, b, s, k), "IsolationForest": peer_iforest,
             "HOG k-NN (aeopt's gradients part alone)": peer_hog_knn}
    if args.skip:
        peers = {n: f for n, f in peers.items() if not any(s in n for s in args.skip.split(","))}
    auc: dict[str, list[float]] = {}
    secs: dict[str, list[float]] = {}
    for c in classes:
        xtr = xa[ya == c][:args.limit_train] if args.limit_train else xa[ya == c]
        yte = (yc != c).astype(int)
        det, seconds = aeopt_fit(xtr, 0)
        row = {"aeopt (default: " + det.score_type_ + ")": (roc_auc_score(yte, det.decision_function(xte)), seconds)}
        for variant, value in score_variants(det, xtr, xte, yte, SCORE_VARIANTS).items():
            row[f"aeopt score {variant}"] = (value, None)
        for label, params in extra_detectors(args):
            other, seconds = aeopt_fit(xtr, 0, **params)
            row[f"aeopt {label}"] = (roc_auc_score(yte, other.decision_function(xte)), seconds)
        for peer, run in peers.items():
            s, t = run(xtr, xte, 0)
            row[peer] = (roc_auc_score(yte, s), t)
        for peer, (a, t) in row.items():
            auc.setdefault(peer, []).append(a)
            if t is not None:
                secs.setdefault(peer, []).append(t)
        print(f"{name} class {c} ({len(xtr)} train): " +
              ", ".join(f"{p} {a:.4f}" + (f" {t:.1f}s" if t else "") for p, (a, t) in row.items()), flush=True)
    lines = [f"### {name}: one-class, {len(classes)} classes, {len(xte)} test images"
             f"{f', at most {args.limit_train} training images per class' if args.limit_train else ''}", "",
             "| method | mean AUROC | " + " | ".join(f"class {c}" for c in classes) + " | fit s / class |",
             "| --- | --- | " + " | ".join("---" for _ in classes) + " | --- |"]
    for peer, values in auc.items():
        t = f"{np.mean(secs[peer]):.1f}" if peer in secs else "(same model)"
        lines.append(f"| {peer} | **{np.mean(values):.4f}** | " + " | ".join(f"{v:.3f}" for v in values) + f" | {t} |")
    return lines + [""]


# --- 2. ODDS tables ------------------------------------------------------------------------------
def odds_split(x, y, seed):
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(x, y, train_size=0.6, stratify=y, random_state=seed)
    mean, std = xtr.mean(0), xtr.std(0)
    std[std < 1e-12] = 1.0
    return ((xtr - mean) / std).astype(np.float32), ((xte - mean) / std).astype(np.float32), ytr, yte


def tables(args) -> list[str]:
    sets = args.odds.split(",") if args.odds else list(ODDS_SETS)
    peers = {"IsolationForest": peer_iforest, "PyOD KNN": peer_pyod("knn"), "PyOD PCA": peer_pyod("pca"),
             "PyOD AutoEncoder": peer_pyod_ae}
    auc: dict[str, dict[str, list[float]]] = {}
    secs: dict[str, float] = {}
    f1: dict[str, list[float]] = {"true contamination": [], "auto": []}

    def add(method, name, a, t=None):
        auc.setdefault(method, {}).setdefault(name, []).append(a)
        if t is not None:
            secs[method] = secs.get(method, 0.0) + t

    for name in sets:
        with np.load(ODDS / f"{name}.npz", allow_pickle=False) as d:
            x, y = d["X"].astype(np.float64), d["y"].astype(int).ravel()
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            xtr, xte, ytr, yte = odds_split(x, y, seed)
            if args.limit_train and len(xtr) > args.limit_train:
                xtr, ytr = xtr[:args.limit_train], ytr[:args.limit_train]
            true_c = float(min(max(ytr.mean(), 1e-3), 0.5))
            det, t = aeopt_fit(xtr, seed, contamination=true_c)
            s = det.decision_function(xte)
            add("aeopt (default: " + det.score_type_ + ")", name, roc_auc_score(yte, s), t)
            f1["true contamination"].append(f1_score(yte, s > det.threshold_))
            f1["auto"].append(f1_score(yte, s > auto_threshold(det.decision_scores_)[0]))
            for variant, value in score_variants(det, xtr, xte, yte, SCORE_VARIANTS).items():
                add(f"aeopt score {variant}", name, value)
            if args.robust is not None:
                rdet, rt = aeopt_fit(xtr, seed, contamination=true_c, robust=args.robust)
                add(f"aeopt robust={args.robust:g} (trim)", name, roc_auc_score(yte, rdet.decision_function(xte)), rt)
            for peer, run in peers.items():
                s, pt = run(xtr, xte, seed)
                add(peer, name, roc_auc_score(yte, finite(s)), pt)
        print(f"{name}: " + ", ".join(f"{m} {np.mean(v[name]):.4f}" for m, v in auc.items()), flush=True)
    lines = [f"### ODDS tables: fit on 60% (with anomalies), score 40%, {args.seeds} seeds "
             f"({args.first_seed}..{args.first_seed + args.seeds - 1}), AUROC", "",
             "| method | mean AUROC | " + " | ".join(sets) + " | fit s (all) |",
             "| --- | --- | " + " | ".join("---" for _ in sets) + " | --- |"]
    for method, per_set in auc.items():
        means = [np.mean(per_set[s]) for s in sets]
        t = f"{secs[method]:.1f}" if method in secs else "(same model)"
        lines.append(f"| {method} | **{np.mean(means):.4f}** | " + " | ".join(f"{v:.3f}" for v in means) + f" | {t} |")
    lines += ["", f"aeopt default's threshold, test F1 averaged over sets and seeds: contamination = the true share "
                  f"{np.mean(f1['true contamination']):.4f}; contamination=\"auto\" {np.mean(f1['auto']):.4f} "
                  f"(difference {np.mean(f1['auto']) - np.mean(f1['true contamination']):+.4f}).", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("images", "tables", "all"), default="all")
    parser.add_argument("--images", default="fashion-mnist,digits", help="one-class data sets")
    parser.add_argument("--classes", help="only these classes, e.g. 0,6")
    parser.add_argument("--limit-train", type=int, help="at most N training samples per class / split")
    parser.add_argument("--limit-test", type=int, help="score at most N test images (a seeded subset)")
    parser.add_argument("--svdd-epochs", type=int, default=10)
    parser.add_argument("--skip", help="comma-separated peers to leave out (substring of the name)")
    parser.add_argument("--odds", help="only these ODDS sets")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="tables: seeds first..first+n-1 (3 = splits that no threshold rule was chosen on)")
    parser.add_argument("--robust", type=float, default=0.0,
                        help="tables: also run aeopt with this trim (default 0: untrimmed, beside the trimmed default)")
    parser.add_argument("--aeopt", action="append", metavar="LABEL=JSON",
                        help="images: also run aeopt with these detector parameters (repeatable)")
    parser.add_argument("--out", help="write the markdown table here")
    args = parser.parse_args()
    torch.manual_seed(0)
    machine = machine_line()
    print(machine, flush=True)
    started = time.time()
    lines = ["# Anomaly detection: aeopt vs PyOD / scikit-learn", "", f"Machine: {machine}.",
             f"Command: `python benchmarks/detect.py {' '.join(sys.argv[1:])}`", ""]
    if args.part in ("images", "all"):
        for name in args.images.split(","):
            lines += one_class(name, args)
    if args.part in ("tables", "all"):
        lines += tables(args)
    lines.append(f"Total wall time {time.time() - started:.0f} s; load average at the end "
                 f"{__import__('os').getloadavg()[0]:.1f}.")
    print("\n".join(lines))
    if args.out:
        atomic_write_text(Path(args.out), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
