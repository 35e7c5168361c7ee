"""`AutoencoderDetector`: an autoencoder anomaly detector with PyOD's contract.

Code written for PyOD runs unchanged: `fit(X)` sets `decision_scores_` (training scores, higher =
more abnormal), `threshold_` and `labels_` (0 normal, 1 anomaly); `decision_function(X)`,
`predict(X)` (= decision_function(X) > threshold_) and `predict_proba(X)` score new data. It is a
scikit-learn estimator: `__init__` only stores its arguments, so `clone`, `get_params` and
`set_params` work, and learned state ends in `_`.

Images (N, H, W) or (N, C, H, W), in [0, 1] or uint8, train a conv model by default; tables
(N, F) an MLP, on features standardized with the training mean and std. Training is aeopt's
(the one loop: precision, early stopping on a held-out `validation_fraction`, best weights),
in memory: nothing is written.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ..data import InMemorySource
from ..data.samples import to_samples, unit_float
from ..errors import AeoptError
from ..models.losses import choose_auto_loss
from ..runs import build_model
from ..settings import Settings
from ..train import fit, resolve_device
from .robust import check_trim, trimmed_objective
from .scores import LATENT_KINDS, RECON_KINDS, SCORES, Scorer
from .thresholds import auto_threshold, check_contamination, contamination_threshold, f1_threshold

# What `score="auto"` picks, and why; the figures are in benchmarks/results/detect.md.
AUTO_SCORE = {
    "image": ("combined", "images: reconstruction error, k-NN code and feature-map distances and the orientation-"
                          "histogram distance merged ranked best in the one-class benchmark (benchmarks/results/detect.md)"),
    "table": ("forest", "tables: an Isolation Forest on the autoencoder's per-feature residuals and codes ranked "
                        "best on the ODDS benchmark, above the raw-feature Isolation Forest "
                        "(benchmarks/results/detect.md)"),
}
SSIM_MIN_SIDE = 16       # SSIM's 11-pixel window needs room: on 8x8 digits it ranked worse than mse
TABLE_HIDDEN = "64,32"   # small tables (hundreds of rows): a small MLP that does not memorize them
TABLE_EPOCHS = 10        # of at least MIN_EPOCH_SAMPLES each: more fit the anomalies in the data too
IMAGE_EPOCHS = 8         # one class of Fashion-MNIST (~5,400 images) in a few seconds on 2 cores
CONV_IMAGE_EPOCHS = 3    # with the gradients part the conv autoencoder's epochs barely move the merged ranking (one-class
                         # Fashion-MNIST validation split: 2 / 3 / 4 epochs 0.9566 / 0.9566 / 0.9569 mean AUROC) and
                         # 3 keep its own parts near their 4-epoch level (0.9331 vs 0.9363) at ~1 s less per class;
                         # an MLP needs its 8 (4: 0.882, 8: 0.923; detect.md)
IMAGE_WIDTH = 16         # conv channels: half the conv default, about as good here at half the time
TABLE_TRIM = 0.1         # robust=None on tables: ODDS mean AUROC 0.806 trimmed vs 0.799 not (detect.md)
MIN_EPOCH_SAMPLES = 4096  # small sets repeat within an epoch up to this: a few hundred images still get
                          # hundreds of steps, and per-epoch costs (validation, checkpoint) stay small


def _quiet(_: str) -> None:
    pass


def _print(message: str) -> None:
    print(message, flush=True)


class AutoencoderDetector(BaseEstimator):
    """Anomaly detection by an autoencoder: reconstruction error, code density, or both.

    Args:
        model: an aeopt model name (`conv`, `mlp`, `vae`, ...) or "auto" (conv for images, mlp for tables).
        latent_dim: code size; None = 16 for images, min(16, max(2, F // 2)) for tables.
        contamination: expected share of anomalies in the training data, in (0, 0.5], or "auto"
            (read from the score distribution: thresholds.py).
        score_type: recon | latent | combined | forest | elbo (VAE) | auto (by data kind, see AUTO_SCORE). Not
            named `score`: scikit-learn reserves that name for a method.
        recon: reconstruction error mse | bce | ssim | auto.
        latent: code density knn | gauss.
        n_neighbors: k of the k-NN code (and feature-map) distance.
        features: the combined score also measures the k-NN distance on the encoder's last feature map
            (conv encoders; scores.py says why). False: recon + latent only, as before.
        gradients: on images the combined score also measures the k-NN distance on the images' orientation
            histograms (gradients.py says why). False: the autoencoder's parts only.
        robust: share of each batch's highest-loss samples left out of training (0 = off; robust.py);
            None = TABLE_TRIM for tables (unsupervised data hold anomalies; it measured better on ODDS),
            0 for images (the one-class protocol trains on clean data).
        epochs, batch_size, lr, loss, patience, precision: aeopt training settings (None = per data kind and model).
        validation_fraction: share of X held out for early stopping and best-weight selection.
        model_options: the model's own knobs, e.g. {"width": 16} or {"hidden": "128,64"}.
        seed: fixes the split, the weights and the batch order.
        verbose: print aeopt's one-line messages (the auto choices, early stopping).
    """

    def __init__(self, model: str = "auto", latent_dim: int | None = None, contamination: float | str = 0.1,
                 score_type: str = "auto", recon: str = "auto", latent: str = "knn", n_neighbors: int = 5,
                 features: bool = True, gradients: bool = True, robust: float | None = None, epochs: int | None = None, batch_size: int = 128, lr: float = 3e-3,
                 loss: str = "auto", patience: int | None = 5, precision: str = "auto",
                 validation_fraction: float = 0.1, model_options: dict | None = None, seed: int = 0,
                 verbose: bool = False):
        self.model = model
        self.latent_dim = latent_dim
        self.contamination = contamination
        self.score_type = score_type
        self.recon = recon
        self.latent = latent
        self.n_neighbors = n_neighbors
        self.features = features
        self.gradients = gradients
        self.robust = robust
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.loss = loss
        self.patience = patience
        self.precision = precision
        self.validation_fraction = validation_fraction
        self.model_options = model_options
        self.seed = seed
        self.verbose = verbose

    # --- input ------------------------------------------------------------------------------
    def _samples(self, X, *, reset: bool) -> torch.Tensor:
        """X as float32 model input: images in [0, 1] (N, C, H, W); tables standardized."""
        if not reset:
            check_is_fitted(self)
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        min_samples = 2 if reset else 1
        if np.ndim(X) == 2:  # tables: scikit-learn's own checks, n_features_in_ included
            X = validate_data(self, X, dtype=None, reset=reset, ensure_min_samples=min_samples)
        else:  # images: n_features_in_ counts pixel values, set below; (N, H, W) and (N, C, H, W) agree
            X = check_array(X, dtype=None, allow_nd=True, ensure_min_samples=min_samples)
        if X.ndim == 2:
            X = X.astype(np.float64)
            if reset:
                self.mean_ = X.mean(axis=0)
                std = X.std(axis=0)
                self.scale_ = np.where(std > 1e-12, std, 1.0)
            x = ((X - self.mean_) / self.scale_).astype(np.float32)
        else:
            x = unit_float(to_samples(X, "X"))
        if reset:
            self.sample_shape_ = tuple(x.shape[1:])
            self.n_features_in_ = math.prod(self.sample_shape_)
        elif tuple(x.shape[1:]) != self.sample_shape_:
            raise AeoptError(f"samples of shape {tuple(x.shape[1:])} do not match the {self.sample_shape_} the "
                             "detector was fitted on: pass data of the training data's shape")
        return torch.from_numpy(np.ascontiguousarray(x))

    # --- fitting -----------------------------------------------------------------------------
    def _choices(self, kind: str, x: torch.Tensor, log: Callable[[str], None]) -> dict:
        """Resolve every "auto"/None setting for this data, saying why where it matters."""
        if self.score_type not in (*SCORES, "auto"):
            raise AeoptError(f"unknown score {self.score_type!r}; known: {', '.join(SCORES)}, auto")
        if self.recon not in (*RECON_KINDS, "auto"):
            raise AeoptError(f"unknown recon score {self.recon!r}; known: {', '.join(RECON_KINDS)}, auto")
        if self.latent not in LATENT_KINDS:
            raise AeoptError(f"unknown latent score {self.latent!r}; known: {', '.join(LATENT_KINDS)}")
        if not (isinstance(self.n_neighbors, int) and self.n_neighbors >= 1):
            raise AeoptError(f"n_neighbors must be a positive integer, got {self.n_neighbors!r}")
        if not 0 < self.validation_fraction < 0.5:
            raise AeoptError(f"validation_fraction must be in (0, 0.5), got {self.validation_fraction!r}")
        model = self.model if self.model != "auto" else ("conv" if kind == "image" else "mlp")
        score, why = (self.score_type, None) if self.score_type != "auto" else AUTO_SCORE[kind]
        if self.score_type == "auto" and model == "vae":
            score, why = "elbo", "a VAE: its negative ELBO is the likelihood bound the model was trained for"
        if why:
            log(f"score auto -> {score} ({why})")
        recon = self.recon
        if recon == "auto":  # measured: ssim ranks best on 28x28 Fashion-MNIST, mse on 8x8 digits and tables
            recon = "ssim" if kind == "image" and min(x.shape[-2:]) >= SSIM_MIN_SIDE else "mse"
        features = math.prod(x.shape[1:])
        latent_dim = self.latent_dim or (16 if kind == "image" else min(16, max(2, features // 2)))
        options = dict(self.model_options or {})
        if kind == "table" and model in ("mlp", "vae", "aae") and "hidden" not in options:
            options["hidden"] = TABLE_HIDDEN
        if kind == "image" and model == "conv" and "width" not in options:
            options["width"] = IMAGE_WIDTH
        epochs = self.epochs or (TABLE_EPOCHS if kind == "table" else
                                 CONV_IMAGE_EPOCHS if model == "conv" else IMAGE_EPOCHS)
        return {"model": model, "score": score, "recon": recon, "latent_dim": latent_dim, "options": options,
                "epochs": epochs}

    def fit(self, X, y=None) -> "AutoencoderDetector":
        """Train on X (y is ignored: unsupervised, as in PyOD) and set the training scores and threshold."""
        contamination = check_contamination(self.contamination)
        x = self._samples(X, reset=True)
        kind = "image" if x.dim() == 4 else "table"
        trim = check_trim(self.robust if self.robust is not None else (TABLE_TRIM if kind == "table" else 0.0))
        log = _print if self.verbose else _quiet
        c = self._choices(kind, x, log)
        self.model_, self.config_ = train_autoencoder(x, c, self, trim=trim, log=log)
        self.score_type_ = c["score"]
        self.scorer_ = Scorer(c["score"], c["recon"], self.latent, self.n_neighbors, seed=self.seed,
                              features=bool(self.features), gradients=bool(self.gradients))
        self.decision_scores_ = self.scorer_.fit(self.model_, x)
        if contamination == "auto":
            self.threshold_, self.threshold_method_ = auto_threshold(self.decision_scores_)
        else:
            self.threshold_ = contamination_threshold(self.decision_scores_, contamination)
            self.threshold_method_ = f"contamination {contamination:g}: the {100 * (1 - contamination):g}% " \
                                     "quantile of the training scores"
        log(f"threshold {self.threshold_:.6g} ({self.threshold_method_})")
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        return self

    def fit_threshold(self, X, y) -> "AutoencoderDetector":
        """Move the threshold to the best F1 on labelled samples (y = 1 anomaly, 0 normal).

        With no anomaly (or no normal sample) in y: a NoAnomalyInLabelsWarning, and the threshold
        from `contamination` stays.
        """
        scores = self.decision_function(X)
        y = np.asarray(y)
        if y.shape != scores.shape or not np.isin(y, (0, 1)).all():
            raise AeoptError(f"labels must be one 0/1 value per sample (1 = anomaly), got shape {y.shape}")
        threshold, f1 = f1_threshold(scores, y, self.threshold_)
        if f1 is not None:
            self.threshold_ = threshold
            self.threshold_method_ = f"best F1 ({f1:.3f}) on {len(y)} labelled samples"
            self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        return self

    # --- scoring -----------------------------------------------------------------------------
    def decision_function(self, X) -> np.ndarray:
        """Anomaly score per sample: higher = more abnormal."""
        check_is_fitted(self)
        return self.scorer_(self.model_, self._samples(X, reset=False))

    def score_parts(self, X) -> dict[str, tuple[float, np.ndarray]]:
        """{part: (weight, values)} of the merged score: each part standardized as the merge uses it
        (training median 0, IQR 1), so one can see which part flags which sample; decision_function is
        their weighted mean. A single score (recon, latent, elbo) is its one part at weight 1, as is."""
        check_is_fitted(self)
        return self.scorer_.weighted(self.scorer_.parts(self.model_, self._samples(X, reset=False)))

    def predict(self, X) -> np.ndarray:
        """1 for an anomaly (score above `threshold_`), 0 for a normal sample."""
        return (self.decision_function(X) > self.threshold_).astype(int)

    def predict_proba(self, X) -> np.ndarray:
        """(N, 2) [P(normal), P(anomaly)]: the score scaled linearly between the training scores'
        minimum and maximum and clipped to [0, 1] (PyOD's "linear" method)."""
        scores = self.decision_function(X)
        lo, hi = float(self.decision_scores_.min()), float(self.decision_scores_.max())
        p = np.clip((scores - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
        return np.column_stack([1.0 - p, p])

    def fit_predict(self, X, y=None) -> np.ndarray:
        return self.fit(X, y).labels_


def train_autoencoder(x: torch.Tensor, choices: dict, params: AutoencoderDetector, *, trim: float,
                      log: Callable[[str], None]) -> tuple[torch.nn.Module, Settings]:
    """Train the detector's autoencoder with aeopt's one loop on x minus a held-out validation share."""
    n = len(x)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(params.seed))
    n_val = max(1, round(n * params.validation_fraction)) if n >= 10 else 0
    val, train = (order[:n_val], order[n_val:]) if n_val else (order, order)
    repeats = max(1, math.ceil(MIN_EPOCH_SAMPLES / len(train)))
    in_unit_range = bool(x.min() >= 0 and x.max() <= 1)
    settings = Settings.from_flat(data="array", model=choices["model"], latent_dim=choices["latent_dim"],
                                  epochs=choices["epochs"], batch_size=params.batch_size, lr=params.lr,
                                  loss=params.loss, seed=params.seed, patience=params.patience,
                                  precision=params.precision, **choices["options"]).validate()
    if params.loss == "auto":
        log(f"loss auto -> {choose_auto_loss(in_unit_range)[1]}")
    torch.manual_seed(params.seed)
    model = build_model(settings, {"sample_shape": list(x.shape[1:]),
                                   "output": "sigmoid" if in_unit_range else "linear"})
    steps = math.ceil(len(train) * repeats / params.batch_size)
    objective = model.objective(settings, in_unit_range=in_unit_range, steps_per_epoch=steps)
    if trim:
        objective = trimmed_objective(objective, trim)
    device = resolve_device(settings.runtime.device)
    result = fit(model, objective, InMemorySource(x[train.repeat(repeats)], seed=params.seed, device=device),
                 InMemorySource(x[val], seed=params.seed, device=device), settings, device=device, log=log,
                 progress=False)
    return result.model.eval(), settings
