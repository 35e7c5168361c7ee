"""The detector's `gradients` part: orientation histograms (gradients.py) and their place in the combined score."""
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from aeopt import AutoencoderDetector
from aeopt.detect import gradients
from aeopt.detect.gradients import BINS, GRIDS, orientation_histograms
from aeopt.detect.scores import GRADIENTS_WEIGHT, Scorer, knn_distance


def _grids(h: np.ndarray) -> list[np.ndarray]:
    """Split descriptors into their grids, each (N, cells, BINS)."""
    out, start = [], 0
    for g in GRIDS:
        size = BINS * g * g
        out.append(h[:, start:start + size].reshape(len(h), BINS, g * g).transpose(0, 2, 1))
        start += size
    return out


def test_edges_vote_for_their_direction_and_each_grid_has_unit_length():
    image = torch.zeros(2, 1, 28, 28)
    image[0, :, 14:, :] = 1.0  # a horizontal edge: the gradient points along y (90 degrees)
    image[1, :, :, 14:] = 1.0  # a vertical edge: along x (0 degrees, between the first and last bin)
    h = orientation_histograms(image)
    assert h.shape == (2, BINS * sum(g * g for g in GRIDS)) and h.dtype == np.float32
    for grid in _grids(h):
        np.testing.assert_allclose(np.linalg.norm(grid.reshape(2, -1), axis=1), 1 / np.sqrt(len(GRIDS)), rtol=1e-5)
        per_bin = grid.sum(axis=1)
        assert per_bin[0].argmax() == BINS // 2 and per_bin[0, BINS // 2] == pytest.approx(per_bin[0].sum())
        assert per_bin[1, 0] == pytest.approx(per_bin[1, -1]) and per_bin[1, 0] + per_bin[1, -1] == pytest.approx(per_bin[1].sum())


def test_descriptor_ignores_contrast_and_takes_the_strongest_colour_channel():
    rng = np.random.default_rng(0)
    grey = torch.from_numpy(rng.uniform(size=(5, 1, 12, 20)).astype(np.float32))
    np.testing.assert_allclose(orientation_histograms(0.5 * grey), orientation_histograms(grey), atol=1e-5)
    colour = torch.cat([0.1 * grey, grey, torch.zeros_like(grey)], dim=1)  # green carries every strongest edge
    np.testing.assert_allclose(orientation_histograms(colour), orientation_histograms(grey), atol=1e-6)


def test_chunks_do_not_change_the_descriptor(monkeypatch):
    x = torch.from_numpy(np.random.default_rng(1).uniform(size=(7, 1, 28, 28)).astype(np.float32))
    whole = orientation_histograms(x)
    monkeypatch.setattr(gradients, "CHUNK_VALUES", BINS * 28 * 28 * 2)  # two images a chunk
    np.testing.assert_array_equal(orientation_histograms(x), whole)
    assert orientation_histograms(x[:0]).shape == (0, whole.shape[1])


@pytest.fixture(scope="module")
def zeros(digits):
    x_train = digits.x_train[digits.y_train == 0].numpy()
    x_test, y_test = digits.x_test.numpy(), (digits.y_test != 0).numpy().astype(int)
    return AutoencoderDetector(epochs=2, precision="fp32").fit(x_train), x_train, x_test, y_test


def test_combined_on_images_merges_the_gradients_part_at_its_weight(zeros):
    detector, x_train, x_test, y_test = zeros
    scorer = detector.scorer_
    assert set(scorer.scales) == {"recon", "latent", "features", "gradients"}
    assert scorer.gradient_reference.shape == (len(x_train), BINS * sum(g * g for g in GRIDS))
    parts = scorer.parts(detector.model_, detector._samples(x_test, reset=False))
    assert roc_auc_score(y_test, parts["gradients"]) > 0.95  # 0s against other digits: edges differ
    z = {n: (parts[n] - m) / s for n, (m, s) in scorer.scales.items()}
    expected = (z["recon"] + z["latent"] + 2 * z["features"] + GRADIENTS_WEIGHT * z["gradients"]) / (4 + GRADIENTS_WEIGHT)
    np.testing.assert_allclose(detector.decision_function(x_test), expected)
    parts = detector.score_parts(x_test)  # the public view of the same standardized parts
    np.testing.assert_allclose(sum(w * v for w, v in parts.values()) / sum(w for w, _ in parts.values()), expected)
    assert {n: w for n, (w, _) in parts.items()} == {"recon": 1, "latent": 1, "features": 2, "gradients": GRADIENTS_WEIGHT}
    # training scores are leave-one-out: a training image is not its own nearest neighbour (distance 0)
    fresh = Scorer("combined", "mse", "knn", 5)
    training_parts = fresh.parts(detector.model_, detector._samples(x_train, reset=False), training=True)
    h = fresh.gradient_reference
    np.testing.assert_allclose(training_parts["gradients"], knn_distance(h, h, 5, exclude_self=True))
    assert (training_parts["gradients"] > knn_distance(h, h, 5, exclude_self=False)).all()  # self (0) left out


def test_gradients_false_and_old_runs_leave_the_part_out(zeros):
    detector, x_train, _, _ = zeros
    x = torch.from_numpy(x_train)
    without = Scorer("combined", "mse", "knn", 5, gradients=False)
    without.fit(detector.model_, x)
    assert "gradients" not in without.scales and without.gradient_reference is None
    assert not without.meta()["gradients"] and "gradient_reference" not in without.tensors()
    with_part = detector.scorer_
    restored = Scorer.restore(with_part.meta(), {k: torch.as_tensor(v) for k, v in with_part.tensors().items()})
    np.testing.assert_array_equal(restored(detector.model_, x[:30]), with_part(detector.model_, x[:30]))
    # a run saved before the part existed (no "gradients" in its meta) scores as it did
    meta = {k: v for k, v in without.meta().items() if k != "gradients"}
    old = Scorer.restore(meta, {k: torch.as_tensor(v) for k, v in without.tensors().items()})
    np.testing.assert_array_equal(old(detector.model_, x[:30]), without(detector.model_, x[:30]))
    # a saved run whose tensors lost the reference is refused, not silently scored without it
    tensors = {k: torch.as_tensor(v) for k, v in with_part.tensors().items() if k != "gradient_reference"}
    with pytest.raises(KeyError, match="gradient_reference"):
        Scorer.restore(with_part.meta(), tensors)


def test_tables_get_no_gradients_part():
    x = np.random.default_rng(0).normal(size=(200, 6))
    detector = AutoencoderDetector(score_type="combined", epochs=1, precision="fp32").fit(x)
    assert "gradients" not in detector.scorer_.scales and detector.scorer_.gradient_reference is None


def test_score_parts_of_a_single_score_is_the_score_itself():
    x = np.random.default_rng(0).normal(size=(200, 6))
    detector = AutoencoderDetector(score_type="recon", epochs=1, precision="fp32").fit(x)
    parts = detector.score_parts(x[:50])
    assert list(parts) == ["recon"] and parts["recon"][0] == 1.0
    np.testing.assert_array_equal(parts["recon"][1], detector.decision_function(x[:50]))
