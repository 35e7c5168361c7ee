"""AutoencoderDetector: quality on digits one-class, PyOD's contract, scikit-learn's rules, thresholds."""
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from aeopt import AeoptError, AutoencoderDetector
from aeopt.detect.robust import TrimmedLoss
from aeopt.detect.scores import Scorer
from aeopt.detect.thresholds import NoAnomalyInLabelsWarning, auto_threshold, f1_threshold
from aeopt.models.losses import build_loss


@pytest.fixture(scope="module")
def zeros(digits):
    """One-class digits: train on the 0s of the training split, test on the whole test split."""
    x_train = digits.x_train[digits.y_train == 0].numpy()
    x_test, y_test = digits.x_test.numpy(), (digits.y_test != 0).numpy().astype(int)
    detector = AutoencoderDetector(contamination=0.05, batch_size=64, precision="fp32").fit(x_train)
    return detector, x_train, x_test, y_test


def test_digits_one_class_auroc_above_0_9_and_at_least_pca(zeros):
    detector, x_train, x_test, y_test = zeros
    auroc = roc_auc_score(y_test, detector.decision_function(x_test))
    pca = PCA(16).fit(x_train.reshape(len(x_train), -1))  # PCA at the detector's code size
    flat = x_test.reshape(len(x_test), -1)
    pca_auroc = roc_auc_score(y_test, ((pca.inverse_transform(pca.transform(flat)) - flat) ** 2).mean(1))
    assert auroc > 0.9
    assert auroc >= pca_auroc  # both are ~1.0 on 0s; benchmarks/results/ has the classes where they differ


def test_pyod_contract(zeros):
    detector, x_train, x_test, _ = zeros
    assert detector.decision_scores_.shape == (len(x_train),)
    assert np.isfinite(detector.threshold_)
    np.testing.assert_array_equal(detector.labels_, (detector.decision_scores_ > detector.threshold_).astype(int))
    assert abs(detector.labels_.mean() - 0.05) <= 1 / len(x_train) + 1e-9  # contamination 5% of training flagged
    scores = detector.decision_function(x_test)
    np.testing.assert_array_equal(detector.predict(x_test), (scores > detector.threshold_).astype(int))
    proba = detector.predict_proba(x_test)
    assert proba.shape == (len(x_test), 2)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    order = np.argsort(scores)
    assert np.all(np.diff(proba[order, 1]) >= 0)  # P(anomaly) grows with the score
    assert set(np.unique(detector.predict(x_test))) <= {0, 1}


def test_images_as_n_h_w_or_uint8_give_the_same_scores(zeros):
    detector, _, x_test, _ = zeros
    expected = detector.decision_function(x_test)
    np.testing.assert_allclose(detector.decision_function(x_test[:, 0]), expected, rtol=1e-6)
    as_uint8 = np.round(x_test * 255).astype(np.uint8)  # digits are 0..16, so x255/16 is not exact
    assert np.corrcoef(detector.decision_function(as_uint8), expected)[0, 1] > 0.99


def test_other_shape_is_a_one_line_error(zeros):
    detector = zeros[0]
    with pytest.raises(AeoptError, match="do not match"):
        detector.decision_function(np.zeros((4, 1, 28, 28), dtype=np.float32))


def test_clone_and_params():
    detector = AutoencoderDetector(contamination=0.2, score_type="recon", model_options={"hidden": "8"})
    copy = clone(detector)
    assert copy.get_params() == detector.get_params()
    assert not hasattr(copy, "threshold_")
    copy.set_params(contamination="auto", n_neighbors=3)
    assert copy.contamination == "auto" and copy.n_neighbors == 3 and detector.contamination == 0.2


# A non-strict xfail: whether the batch sizes round alike depends on the CPU's kernels (it fails on AMD
# EPYC, passes on Intel Ice Lake: the XPASS there is that, not a fixed bug).
@parametrize_with_checks([AutoencoderDetector(epochs=1, latent_dim=2, model_options={"hidden": "8"})],
                         expected_failed_checks=lambda est: {
                             "check_methods_subset_invariance": "float32 forward passes round differently with the "
                                                                "batch size (~1e-7 relative), the check's tolerance"})
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("bad", [0, 0.0, 0.7, -0.1, float("nan"), "most", True])
def test_contamination_is_validated(bad):
    with pytest.raises(AeoptError, match="contamination"):
        AutoencoderDetector(contamination=bad).fit(np.random.default_rng(0).normal(size=(20, 3)))


def test_f1_threshold_without_anomalies_warns_and_keeps_the_fallback():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=50)
    with pytest.warns(NoAnomalyInLabelsWarning, match="no anomaly"):
        threshold, f1 = f1_threshold(scores, np.zeros(50, int), fallback=1.5)
    assert threshold == 1.5 and f1 is None and threshold > scores.min()
    y = (scores > 1.0).astype(int)
    threshold, f1 = f1_threshold(scores, y, fallback=99.0)
    assert f1 == 1.0 and scores[y == 0].max() < threshold < scores[y == 1].min()


def test_detector_fit_threshold_no_anomaly_fallback(zeros):
    fitted, x_train, _, _ = zeros
    detector = AutoencoderDetector(contamination=0.05)
    detector.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})  # don't move the shared one
    before = detector.threshold_
    with pytest.warns(NoAnomalyInLabelsWarning):
        detector.fit_threshold(x_train[:30], np.zeros(30, int))
    assert detector.threshold_ == before > detector.decision_scores_.min()


def test_auto_threshold_finds_a_separated_group():
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(0, 1, 950), rng.normal(6, 1, 50)]
    threshold, how = auto_threshold(scores)
    assert 2.0 < threshold < 4.0 and "Hampel" in how
    assert 0.04 <= (scores > threshold).mean() <= 0.07
    assert (np.ones(10) > auto_threshold(np.ones(10))[0]).sum() == 0  # equal scores: nothing flagged


def test_auto_threshold_reads_a_large_anomalous_share_from_the_mode():
    """A third anomalous: the MAD grows with them and Hampel's rule flags too few; the mirror rule
    (whatever is missing below the mode is the anomalies' share) flags about the right share."""
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(0, 1, 650), rng.normal(4, 1, 350)]
    truth = np.r_[np.zeros(650), np.ones(350)]
    threshold, how = auto_threshold(scores)
    median = np.median(scores)
    hampel = median + 2 * 1.4826 * np.median(np.abs(scores - median))
    assert "mirror rule" in how.split(":")[1] and threshold < hampel
    assert 0.28 <= (scores > threshold).mean() <= 0.42
    f1 = lambda t: 2 * ((scores > t) & (truth == 1)).sum() / ((scores > t).sum() + truth.sum())  # noqa: E731
    assert f1(threshold) > f1(hampel) + 0.1 and f1(threshold) > 0.85


def test_auto_contamination_flags_no_more_than_half():
    x = np.random.default_rng(1).normal(size=(200, 4))
    detector = AutoencoderDetector(contamination="auto", epochs=1, model_options={"hidden": "8"}).fit(x)
    assert 0 < detector.labels_.mean() <= 0.5 and "Hampel" in detector.threshold_method_


def test_trimmed_loss_ignores_the_worst_samples():
    base = build_loss("mse", in_unit_range=False)
    x = torch.zeros(10, 3)
    x_hat = torch.full((10, 3), 0.1)
    x_hat[0] = 100.0  # one sample the model cannot reconstruct (an anomaly)
    out = {"x_hat": x_hat, "logits": x_hat, "z": torch.zeros(10, 2)}
    assert base(out, x)["loss"] > 900
    trimmed = TrimmedLoss(base, 0.1)(out, x)["loss"]
    assert trimmed == pytest.approx(0.01)


@pytest.mark.parametrize("score,recon,latent", [("recon", "mse", "knn"), ("recon", "ssim", "knn"),
                                                ("latent", "mse", "knn"), ("latent", "mse", "gauss"),
                                                ("combined", "bce", "gauss"), ("forest", "mse", "knn")])
def test_every_score_ranks_zeros_against_the_rest(zeros, score, recon, latent):
    detector, x_train, x_test, y_test = zeros
    scorer = Scorer(score, recon, latent, 5)
    train_scores = scorer.fit(detector.model_, torch.from_numpy(x_train))
    test_scores = scorer(detector.model_, torch.from_numpy(x_test))
    assert train_scores.shape == (len(x_train),) and np.isfinite(test_scores).all()
    assert roc_auc_score(y_test, test_scores) > 0.8


def test_combined_adds_the_encoder_feature_map_for_conv_encoders_only(zeros):
    detector, x_train, x_test, y_test = zeros
    scorer = detector.scorer_
    assert set(scorer.scales) == {"recon", "latent", "features", "gradients"}
    channels = [m for m in detector.model_.encoder.modules() if isinstance(m, torch.nn.Conv2d)][-1].out_channels
    assert scorer.feature_reference.shape == (len(x_train), channels * 4)  # the last conv layer's map in 2 x 2 cells
    parts = scorer.parts(detector.model_, detector._samples(x_test, reset=False))
    assert roc_auc_score(y_test, parts["features"]) > 0.9
    # the merge (gradients part aside, test_gradients.py): weights 1, 1, 2 over the standardized parts
    x_train_t = torch.from_numpy(x_train)
    no_gradients = Scorer("combined", "mse", "knn", 5, gradients=False)
    no_gradients.fit(detector.model_, x_train_t)
    parts = no_gradients.parts(detector.model_, detector._samples(x_test, reset=False))
    z = {n: (parts[n] - m) / s for n, (m, s) in no_gradients.scales.items()}
    np.testing.assert_allclose(no_gradients(detector.model_, torch.from_numpy(x_test)),
                               (z["recon"] + z["latent"] + 2 * z["features"]) / 4)
    without = Scorer("combined", "mse", "knn", 5, features=False, gradients=False)
    without.fit(detector.model_, x_train_t)
    assert set(without.scales) == {"recon", "latent"} and without.feature_reference is None
    mlp = AutoencoderDetector(model="mlp", epochs=1, precision="fp32", gradients=False).fit(x_train)  # no spatial map
    assert set(mlp.scorer_.scales) == {"recon", "latent"} and not mlp.scorer_.meta()["features"]
    # a run saved before the part existed (no "features" in its meta) scores as it did: recon + latent
    meta = {k: v for k, v in without.meta().items() if k != "features"}
    old = Scorer.restore(meta, {k: torch.as_tensor(v) for k, v in without.tensors().items()})
    np.testing.assert_array_equal(old(detector.model_, x_train_t[:20]), without(detector.model_, x_train_t[:20]))


def test_vae_elbo_score_and_elbo_needs_a_vae(digits):
    x = digits.x_train[digits.y_train == 0].numpy()
    vae = AutoencoderDetector(model="vae", epochs=2, precision="fp32").fit(x)
    assert vae.score_type_ == "elbo" and np.isfinite(vae.decision_scores_).all()
    with pytest.raises(AeoptError, match="VAE"):
        AutoencoderDetector(score_type="elbo", epochs=1, model_options={"hidden": "8"}).fit(
            np.random.default_rng(0).normal(size=(30, 3)))


def test_tables_get_an_mlp_and_standardized_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)) * [1, 10, 100, 1000, 1e4] + 50
    outliers = x[:5] + [0, 0, 0, 0, 1e5]
    detector = AutoencoderDetector(contamination=0.05, epochs=3).fit(x[5:])
    assert detector.config_.architecture.model == "mlp" and detector.n_features_in_ == 5
    assert detector.decision_function(outliers).min() > np.percentile(detector.decision_scores_, 99)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detector.predict(x[:3])


def test_tables_score_auto_is_the_forest_and_it_survives_a_save_and_load(tmp_path):
    """The forest is refitted from the stored training features on load (no pickle): same scores."""
    from aeopt.detect.run import load_detector, save_detector_state
    from aeopt.runs import load_tensors, save_config, save_tensors

    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 6))
    x[:, 5] = x[:, :5].sum(1)  # one feature the others predict
    odd = x[:20].copy()
    odd[:, 5] += 8.0  # breaks that relation: feature 5 alone stays within its usual range
    normal, train = x[20:200], x[200:]
    y = np.r_[np.zeros(len(normal)), np.ones(len(odd))]
    detector = AutoencoderDetector(contamination=0.05, epochs=5).fit(train)
    assert detector.score_type_ == "forest"
    auroc = roc_auc_score(y, detector.decision_function(np.r_[normal, odd]))
    raw_forest = roc_auc_score(y, -IsolationForest(random_state=0).fit(train).score_samples(np.r_[normal, odd]))
    assert auroc > 0.9 and auroc > raw_forest + 0.03  # measured 0.951 vs 0.893
    save_config(tmp_path, detector.config_, {"sample_shape": [6], "is_image": False, "output": "linear",
                                            "scaler": None, "n_train": len(train)})
    save_tensors(tmp_path / "model.safetensors", detector.model_.state_dict())
    save_detector_state(tmp_path, detector)
    loaded, _ = load_detector(tmp_path)
    np.testing.assert_array_equal(loaded.decision_function(odd), detector.decision_function(odd))
    # a state file without the forest's training features is damaged: one line, not a KeyError
    tensors = load_tensors(tmp_path / "detector.safetensors")
    del tensors["scorer.forest_features"]
    save_tensors(tmp_path / "detector.safetensors", tensors)
    with pytest.raises(AeoptError, match="damaged"):
        load_detector(tmp_path)
