import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from aeopt import AutoencoderTransformer


@parametrize_with_checks([AutoencoderTransformer(epochs=3, hidden="8")])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _curved_table(n=400, seed=0):
    """Points on a 1-D curve embedded in 6-D: a nonlinear code of size 1 describes them exactly."""
    t = np.random.default_rng(seed).uniform(-2, 2, n)
    return np.stack([t, t ** 2, np.sin(2 * t), np.cos(t), t ** 3 / 4, np.tanh(t)], axis=1)


def test_round_trip_beats_pca_on_a_curve():
    X = _curved_table()
    ae = AutoencoderTransformer(latent_dim=1, epochs=120, hidden="32,16").fit(X)
    z = ae.transform(X)
    assert z.shape == (400, 1)
    ae_err = np.mean((ae.inverse_transform(z) - X) ** 2)
    scaler = StandardScaler().fit(X)
    pca = PCA(1).fit(scaler.transform(X))
    pca_err = np.mean((scaler.inverse_transform(pca.inverse_transform(pca.transform(scaler.transform(X)))) - X) ** 2)
    assert ae_err < 0.5 * pca_err
    assert ae.score(X) > -0.2


def test_works_in_a_pipeline():
    X = _curved_table(200)
    pipe = make_pipeline(StandardScaler(), AutoencoderTransformer(latent_dim=2, epochs=5))
    assert pipe.fit_transform(X).shape == (200, 2)


def test_rejects_nan():
    X = _curved_table(50)
    X[3, 2] = np.nan
    with pytest.raises(ValueError):
        AutoencoderTransformer(epochs=1).fit(X)
