"""Anomaly scores from a trained autoencoder: higher = more abnormal, one float per sample.

The scores, each a rule with its reason:
  recon     the reconstruction error. An autoencoder trained on normal data reconstructs normal
            data well and the rest badly. `mse` (any data), `bce` (data in [0, 1]: the Bernoulli
            likelihood the model was trained on), `ssim` (images: 1 - SSIM counts broken structure,
            not shifted brightness).
  latent    how far a sample's code lies from the training codes: the mean distance to its
            k nearest training codes (k-NN; no shape assumed) or the Mahalanobis distance under
            one Gaussian fitted to them (`gauss`). An anomaly can be reconstructed well and still
            land where no normal code lies.
  combined  recon and latent, each standardized by the median and IQR of its training scores,
            then averaged: the two errors disagree on different samples, so their mean ranks
            better than either (benchmarks/results/detect.md measures it). With a convolutional
            encoder (images) a third part, `features`, at twice the weight: the k-NN distance on the
            encoder's last feature map averaged to 2 x 2 cells. The 16-number code keeps what the
            decoder needs to redraw a sample; the feature map keeps which local patterns occur
            where, and a pullover's sleeves or a sneaker's sole differ there first. On one-class
            Fashion-MNIST it ranked above the code distance alone, on digits level (detect.md).
            On images a fourth part, `gradients`, at GRADIENTS_WEIGHT: the k-NN distance on the
            images' orientation histograms (gradients.py says what and why).
  forest    an Isolation Forest on what the autoencoder sees of each sample: its residual
            x - x_hat, feature by feature, and its code, merged with the combined score (MERGED).
            A single reconstruction error averages the residual away, and on tables an anomaly
            is often one feature that the others do not predict: the forest isolates it there.
            On the ODDS tables it ranked above the combined score and above an Isolation Forest
            on the raw features (detect.md); on images the residual has hundreds of pixels and it
            ranked below `combined`.
  elbo      for a VAE: the negative ELBO, -log p(x|z=mu) + KL(q(z|x) || N(0, I)).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AeoptError
from ..metrics import ssim_per_sample
from .gradients import orientation_histograms

SCORES = ("recon", "latent", "combined", "forest", "elbo")
RECON_KINDS = ("mse", "bce", "ssim")
LATENT_KINDS = ("knn", "gauss")
BATCH = 1024  # samples per forward pass when scoring: bounded memory, few Python steps
KNN_CHUNK = 2048  # query rows per distance block: a 2048 x n_train float matrix at a time
FEATURE_CELLS = 2  # the feature map averaged to 2 x 2 cells: ranked above 4 x 4 and the whole map on one-class
                   # Fashion-MNIST (0.9356 / 0.9302 / 0.9332 mean AUROC, detect.md), and C x 4 numbers per sample
                   # keep the stored reference small


def _batches(x: torch.Tensor, device):
    for start in range(0, len(x), BATCH):
        yield x[start:start + BATCH].to(device)


@torch.no_grad()
def forward_all(model: torch.nn.Module, x: torch.Tensor, recon: str, *, residuals: bool = False,
                features: bool = False) -> dict[str, np.ndarray]:
    """One eval-mode pass over x: "error" (reconstruction error per sample), "code", and if asked
    "residual" (x_hat - x flattened) and "features" (the encoder's pooled feature map, or None
    when the encoder has no spatial map).

    For a VAE the code is the posterior mean, so scores are deterministic.
    """
    model.eval()
    device = next(model.parameters()).device
    got: dict[str, list] = {"error": [], "code": [], "residual": [], "features": []}
    with _last_feature_map(model, enabled=features) as seen:
        for batch in _batches(x, device):
            out = model(batch)
            got["error"].append(recon_error(out, batch, recon).cpu())
            got["code"].append(out.get("mu", out["z"]).float().flatten(1).cpu())
            if residuals:
                got["residual"].append((out["x_hat"].float() - batch.float()).flatten(1).cpu())
            if features and "map" in seen:
                got["features"].append(F.adaptive_avg_pool2d(seen.pop("map").float(), FEATURE_CELLS).flatten(1).cpu())
    result = {"error": torch.cat(got["error"]).double().numpy(), "code": torch.cat(got["code"]).numpy()}
    if residuals:
        result["residual"] = torch.cat(got["residual"]).numpy()
    if features:
        result["features"] = torch.cat(got["features"]).numpy() if got["features"] else None
    return result


@contextmanager
def _last_feature_map(model: torch.nn.Module, *, enabled: bool):
    """While open, `seen["map"]` holds the last 4-D (N, C, H, W) output of the encoder's layers in the
    latest forward pass: for aeopt's conv encoder, the last activation before the flatten."""
    seen: dict[str, torch.Tensor] = {}
    encoder = getattr(model, "encoder", None)
    if not enabled or not isinstance(encoder, torch.nn.Module):
        yield seen
        return

    def keep(_module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            seen["map"] = output

    handles = [m.register_forward_hook(keep) for m in encoder.modules() if not any(True for _ in m.children())]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def recon_error(out: dict[str, torch.Tensor], x: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-sample reconstruction error of kind mse | bce | ssim, shape (N,)."""
    x = x.float()
    if kind == "mse":
        return (out["x_hat"].float() - x).square().flatten(1).mean(1)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(out["logits"].float(), x, reduction="none").flatten(1).mean(1)
    if kind == "ssim":
        if x.dim() != 4:
            raise AeoptError("the ssim reconstruction score needs images (N, C, H, W); use mse for tables")
        return 1.0 - ssim_per_sample(out["x_hat"].float().clamp(0, 1), x)
    raise AeoptError(f"unknown reconstruction score {kind!r}; known: {', '.join(RECON_KINDS)}")


@torch.no_grad()
def negative_elbo(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """-ELBO per sample in nats at z = mu (deterministic): reconstruction NLL + KL to the prior."""
    if not hasattr(model, "kl_per_sample"):
        raise AeoptError("score elbo needs a VAE (--model vae); use recon, latent or combined")
    model.eval()
    device = next(model.parameters()).device
    parts = []
    for batch in _batches(x, device):
        out = model(batch)
        parts.append((model.recon_nll_per_sample(out, batch) + model.kl_per_sample(out)).cpu())
    return torch.cat(parts).double().numpy()


def knn_distance(codes: np.ndarray, reference: np.ndarray, k: int, *, exclude_self: bool) -> np.ndarray:
    """Mean Euclidean distance from each code to its k nearest reference codes.

    `exclude_self` (scoring the reference set itself) drops each point's zero distance to itself,
    so training scores are leave-one-out and comparable with scores of new data.
    """
    # float64: float32's matmul form of the distance rounds differently per batch shape, and a
    # sample's score must not depend on which other samples are scored with it
    ref = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float64))
    q = torch.from_numpy(np.ascontiguousarray(codes, dtype=np.float64))
    k_eff = min(k + int(exclude_self), len(ref))
    out = []
    for start in range(0, len(q), KNN_CHUNK):
        d = torch.cdist(q[start:start + KNN_CHUNK], ref).topk(k_eff, largest=False).values
        out.append(d[:, 1:] if exclude_self and k_eff > 1 else d)
    return torch.cat(out).mean(1).double().numpy()


@dataclass
class Gaussian:
    """One Gaussian on the training codes, with shrinkage (Ledoit-Wolf): stable when codes outnumber
    samples or are nearly collinear, where the plain covariance is singular."""

    mean: np.ndarray
    precision: np.ndarray

    @classmethod
    def fit(cls, codes: np.ndarray) -> "Gaussian":
        from sklearn.covariance import LedoitWolf

        lw = LedoitWolf().fit(codes.astype(np.float64))
        return cls(lw.location_, lw.precision_)

    def distance(self, codes: np.ndarray) -> np.ndarray:
        d = codes.astype(np.float64) - self.mean
        return np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", d, self.precision, d), 0.0))


# Scores that merge standardized parts, and each part's weight (a part the model cannot give is left out).
# The features part counts double: 1:1:2 ranked above 1:1:1 on one-class Fashion-MNIST (0.9356 vs 0.9347). The forest's path length saturates
# (a sample 10 standard deviations out scores about as high as the most unusual training samples), so
# `forest` keeps the unbounded reconstruction error and code distance beside it, at half the weight:
# a far-out sample still ranks first, and the forest still orders the bulk (ODDS: 0.829 mean AUROC
# merged vs 0.830 forest alone, detect.md).
# The gradients part outweighs the autoencoder's three together: weight 6 of 10 ranked at the top of a flat
# range on Fashion-MNIST's validation split (weight 4 / 6 / 8 / 12, detect.md).
GRADIENTS_WEIGHT = 6.0
MERGED = {"combined": {"recon": 1.0, "latent": 1.0, "features": 2.0, "gradients": GRADIENTS_WEIGHT},
          "forest": {"forest": 2.0, "recon": 1.0, "latent": 1.0}}
FOREST_TREES = 100  # scikit-learn's and PyOD's default; 300 ranked the same on ODDS (+-0.001)


def fit_forest(features: np.ndarray, seed: int):
    """The Isolation Forest of the `forest` score. Deterministic in (features, seed): a loaded run
    refits it from the stored training features instead of unpickling trees."""
    from sklearn.ensemble import IsolationForest

    return IsolationForest(n_estimators=FOREST_TREES, random_state=seed).fit(features)


def weighted_mean(weighted: dict[str, tuple[float, np.ndarray]]) -> np.ndarray:
    """The score from its Scorer.weighted parts (a single part at weight 1 comes back as is)."""
    return sum(w * values for w, values in weighted.values()) / sum(w for w, _ in weighted.values())


def robust_scale(train_scores: np.ndarray) -> tuple[float, float]:
    """(median, IQR) of the training scores: a scale that the few anomalies in them cannot move."""
    q25, q50, q75 = np.percentile(train_scores, [25, 50, 75])
    return float(q50), float(max(q75 - q25, 1e-12))


@dataclass
class Scorer:
    """The fitted state of a score: what it needs from the training data to score new samples."""

    score: str
    recon: str
    latent: str
    n_neighbors: int
    reference: np.ndarray | None = None          # training codes (k-NN)
    gaussian: Gaussian | None = None             # fitted Gaussian (gauss)
    scales: dict[str, tuple[float, float]] = field(default_factory=dict)  # combined: (median, IQR) per part
    seed: int = 0                                # the forest's
    forest_features: np.ndarray | None = None    # training residuals + codes (forest), float32
    forest: object = None                        # the fitted IsolationForest (refitted on load)
    features: bool = True                        # combined: fit the feature-map part where the encoder has one
    feature_reference: np.ndarray | None = None  # training feature maps, pooled (k-NN), float32; set = the part is used
    gradients: bool = True                       # combined: fit the orientation-histogram part on images
    gradient_reference: np.ndarray | None = None  # training images' orientation histograms (k-NN); set = used

    def parts(self, model, x: torch.Tensor, *, training: bool = False) -> dict[str, np.ndarray]:
        """The raw score parts this score needs, per sample."""
        if self.score == "elbo":
            return {"elbo": negative_elbo(model, x)}
        want_features = self.score == "combined" and (self.features if training else self.feature_reference is not None)
        want_gradients = self.score == "combined" and x.dim() == 4 and (
            self.gradients if training else self.gradient_reference is not None)
        passed = forward_all(model, x, self.recon, residuals=self.score == "forest", features=want_features)
        errors, codes = passed["error"], passed["code"]
        parts = {}
        if self.score == "forest":
            forest_input = np.concatenate([passed["residual"], codes], axis=1).astype(np.float32)
            if training:
                self.forest_features = forest_input
                self.forest = fit_forest(forest_input, self.seed)
            parts["forest"] = -self.forest.score_samples(forest_input)  # higher = shorter paths = more isolated
        if self.score in ("recon", "combined", "forest"):
            parts["recon"] = errors
        if self.score in ("latent", "combined", "forest"):
            if training:
                self._fit_latent(codes)
            if self.latent == "knn":
                parts["latent"] = knn_distance(codes, self.reference, self.n_neighbors, exclude_self=training)
            else:
                parts["latent"] = self.gaussian.distance(codes)
        if want_features and passed["features"] is not None:  # None: no spatial map (an MLP encoder)
            if training:
                self.feature_reference = passed["features"].astype(np.float32)
            parts["features"] = knn_distance(passed["features"], self.feature_reference, self.n_neighbors,
                                             exclude_self=training)
        if want_gradients:
            histograms = orientation_histograms(x)
            if training:
                self.gradient_reference = histograms
            parts["gradients"] = knn_distance(histograms, self.gradient_reference, self.n_neighbors,
                                              exclude_self=training)
        return parts

    def _fit_latent(self, codes: np.ndarray) -> None:
        if self.latent == "knn":
            self.reference = codes.astype(np.float32)
        else:
            self.gaussian = Gaussian.fit(codes)

    def fit(self, model, x: torch.Tensor) -> np.ndarray:
        """Fit on the training data; returns its scores (k-NN leave-one-out)."""
        parts = self.parts(model, x, training=True)
        if self.score in MERGED:
            self.scales = {name: robust_scale(values) for name, values in parts.items()}
        return self.merge(parts)

    def __call__(self, model, x: torch.Tensor) -> np.ndarray:
        return self.merge(self.parts(model, x))

    def weighted(self, parts: dict[str, np.ndarray]) -> dict[str, tuple[float, np.ndarray]]:
        """{part: (weight, values)} as the merge uses them: a merged score's parts standardized by their
        training (median, IQR); a single score is its one part at weight 1, unchanged."""
        if self.score not in MERGED:
            name, values = next(iter(parts.items()))
            return {name: (1.0, values)}
        weights = MERGED[self.score]
        return {n: (weights[n], (parts[n] - m) / s) for n, (m, s) in self.scales.items()}

    def merge(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        return weighted_mean(self.weighted(parts))

    # --- persistence: tensors to safetensors, the rest to JSON (never pickle) ---
    def tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        if self.reference is not None:
            out["reference"] = torch.from_numpy(self.reference)
        if self.gaussian is not None:
            out["gauss_mean"] = torch.from_numpy(self.gaussian.mean)
            out["gauss_precision"] = torch.from_numpy(self.gaussian.precision)
        if self.forest_features is not None:
            out["forest_features"] = torch.from_numpy(self.forest_features)
        if self.feature_reference is not None:
            out["feature_reference"] = torch.from_numpy(self.feature_reference)
        if self.gradient_reference is not None:
            out["gradient_reference"] = torch.from_numpy(self.gradient_reference)
        return out

    def meta(self) -> dict:
        return {"score": self.score, "recon": self.recon, "latent": self.latent, "n_neighbors": self.n_neighbors,
                "scales": {k: list(v) for k, v in self.scales.items()}, "seed": self.seed,
                "features": self.feature_reference is not None, "gradients": self.gradient_reference is not None}

    @classmethod
    def restore(cls, meta: dict, tensors: dict[str, torch.Tensor]) -> "Scorer":
        scorer = cls(meta["score"], meta["recon"], meta["latent"], int(meta["n_neighbors"]),
                     scales={k: tuple(v) for k, v in meta["scales"].items()}, seed=int(meta.get("seed", 0)))
        if "reference" in tensors:
            scorer.reference = tensors["reference"].numpy()
        scorer.features = bool(meta.get("features", False))  # runs saved before the part existed: without it
        if scorer.features:
            if "feature_reference" not in tensors:
                raise KeyError("scorer.feature_reference")
            scorer.feature_reference = tensors["feature_reference"].float().numpy()
        scorer.gradients = bool(meta.get("gradients", False))  # likewise for runs saved before this part
        if scorer.gradients:
            if "gradient_reference" not in tensors:
                raise KeyError("scorer.gradient_reference")
            scorer.gradient_reference = tensors["gradient_reference"].float().numpy()
        if "gauss_mean" in tensors:
            scorer.gaussian = Gaussian(tensors["gauss_mean"].double().numpy(),
                                       tensors["gauss_precision"].double().numpy())
        if scorer.score == "forest" and "forest_features" not in tensors:
            raise KeyError("scorer.forest_features")
        if "forest_features" in tensors:
            scorer.forest_features = tensors["forest_features"].float().numpy()
            scorer.forest = fit_forest(scorer.forest_features, scorer.seed)
        return scorer
