"""scikit-learn transformer: `fit` trains, `transform` encodes, `inverse_transform` decodes.

Works in a `Pipeline` on tables (n_samples, n_features): features are standardized with the
training mean and std, the model is trained with aeopt's trainer in a temporary directory (no
files are left behind), and `score` is the negative mean squared reconstruction error in the
standardized scale (higher is better, as scikit-learn expects).
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from .data import InMemorySource
from .runs import build_model
from .settings import Settings
from .train import fit


class AutoencoderTransformer(TransformerMixin, BaseEstimator):
    """An autoencoder as a scikit-learn transformer (transform = encode, inverse_transform = decode).

    Args mirror `aeopt.Settings`; the defaults suit small tables.
    """

    def __init__(self, latent_dim: int = 2, model: str = "mlp", hidden: str = "64,32", epochs: int = 60,
                 batch_size: int = 64, lr: float = 3e-3, loss: str = "mse", optimizer: str = "adamw",
                 weight_decay: float = 1e-4, seed: int = 0):
        self.latent_dim = latent_dim
        self.model = model
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.loss = loss
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.seed = seed

    def _scale(self, X: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((X - self.mean_) / self.scale_).astype(np.float32))

    def fit(self, X, y=None) -> "AutoencoderTransformer":
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        x = self._scale(X)
        config = Settings.from_flat(data="array", model=self.model, latent_dim=self.latent_dim, epochs=self.epochs,
                                    batch_size=self.batch_size, lr=self.lr, loss=self.loss, optimizer=self.optimizer,
                                    weight_decay=self.weight_decay, seed=self.seed, patience=None,
                                    hidden=self.hidden if self.model == "mlp" else None, precision="fp32",
                                    device="cpu").validate()
        torch.manual_seed(self.seed)
        model = build_model(config, {"sample_shape": [x.shape[1]], "output": "linear"})
        steps = -(-len(x) // self.batch_size)
        objective = model.objective(config, in_unit_range=False, steps_per_epoch=steps)
        # Every sample trains; the same samples serve as validation for early stopping and best weights.
        source = InMemorySource(x, seed=self.seed)
        result = fit(model, objective, source, source, config, device="cpu", log=lambda _: None, progress=False)
        self.autoencoder_ = result.model.eval()
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        with torch.no_grad():
            return self.autoencoder_.encode(self._scale(X)).double().numpy()

    def inverse_transform(self, Z) -> np.ndarray:
        check_is_fitted(self)
        Z = np.asarray(Z, dtype=np.float32)
        with torch.no_grad():
            x_hat = self.autoencoder_.decode(torch.from_numpy(Z)).double().numpy()
        return x_hat * self.scale_ + self.mean_

    def score(self, X, y=None) -> float:
        """Negative mean squared reconstruction error (standardized scale): higher is better."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        x = self._scale(X)
        with torch.no_grad():
            x_hat = self.autoencoder_(x)["x_hat"]
        return -float((x_hat - x).square().mean())
