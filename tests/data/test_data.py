"""Tests for aeopt.data: every source round-trips real values, and bad input gives AeoptError."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aeopt.data import KNOWN_SOURCES, Dataset, load_array_file, load_data, standardize
from aeopt.errors import AeoptError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, arr: np.ndarray, type_byte: int = 0x08, gz: bool = False) -> str:
    """Write ``arr`` as an IDX file (big-endian data, as the format requires)."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_byte]
    raw = bytes([0, 0, type_byte, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw += np.asarray(arr).astype(dtype).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return str(path)


def all_x(d: Dataset) -> torch.Tensor:
    return torch.cat([d.x_train, d.x_val, d.x_test])


def all_y(d: Dataset) -> torch.Tensor:
    return torch.cat([d.y_train, d.y_val, d.y_test])


def check_tensors(d: Dataset) -> None:
    for t in (d.x_train, d.x_val, d.x_test):
        assert t.dtype == torch.float32 and t.is_contiguous()
    for t in (d.y_train, d.y_val, d.y_test):
        assert t is None or t.dtype == torch.int64


def sorted_rows(x: torch.Tensor) -> np.ndarray:
    """Rows of a batch flattened and sorted, to compare data regardless of the split order."""
    a = x.reshape(len(x), -1).numpy()
    return a[np.lexsort(a.T[::-1])]


# --- digits -----------------------------------------------------------------------------


def test_digits_shapes_range_and_labels():
    d = load_data()
    check_tensors(d)
    assert d.name == "digits" and d.is_image and d.scaler is None
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (1797 - 180 - 270, 180, 270)
    assert d.sample_shape == (1, 8, 8)
    x = all_x(d)
    assert x.min().item() == 0.0 and x.max().item() == 1.0
    assert d.in_unit_range
    assert sorted(all_y(d).unique().tolist()) == list(range(10))


def test_digits_split_is_deterministic_by_seed():
    a, b, c = load_data(seed=0), load_data(seed=0), load_data(seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    # Same samples overall, just split differently.
    assert np.array_equal(sorted_rows(all_x(a)), sorted_rows(all_x(c)))


def test_limit_keeps_first_training_samples_only():
    full, small = load_data(), load_data(limit=50)
    assert len(small.x_train) == 50
    assert torch.equal(small.x_train, full.x_train[:50])
    assert torch.equal(small.x_val, full.x_val) and torch.equal(small.x_test, full.x_test)


def test_fractions_change_split_sizes():
    d = load_data(val_fraction=0.2, test_fraction=0.3)
    assert (len(d.x_val), len(d.x_test)) == (round(1797 * 0.2), round(1797 * 0.3))


# --- fashion-mnist ----------------------------------------------------------------------


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="fashion-mnist is not installed")
def test_fashion_mnist():
    d = load_data("fashion-mnist", seed=3)
    check_tensors(d)
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (55000, 5000, 10000)
    assert d.sample_shape == (1, 28, 28) and d.is_image
    assert 0.0 == d.x_test.min().item() and d.x_test.max().item() == 1.0
    assert sorted(d.y_test.unique().tolist()) == list(range(10))
    assert torch.bincount(d.y_test).tolist() == [1000] * 10  # the official t10k split, untouched


def test_fashion_mnist_missing_dir(tmp_path):
    with pytest.raises(AeoptError, match="apt-get install -y dataset-fashion-mnist"):
        load_data("fashion-mnist", data_dir=str(tmp_path))
    with pytest.raises(AeoptError, match="no directory"):
        load_data("fashion-mnist", data_dir=str(tmp_path / "nope"))


def test_fashion_mnist_small_copy_in_data_dir(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 120), ("t10k", 30)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 4, 5)), gz=True)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n))  # plain, no .gz
    d = load_data("fashion-mnist", data_dir=str(tmp_path))
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (110, 10, 30)
    assert d.sample_shape == (1, 4, 5)


# --- idx --------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip_with_labels(tmp_path, gz):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (20, 6, 7)).astype(np.uint8)
    labels = np.arange(20) % 4
    ipath = write_idx(tmp_path / "img.bin", imgs, gz=gz)  # extension says nothing about gzip
    lpath = write_idx(tmp_path / "lab.bin", labels, gz=gz)
    d = load_data(f"idx:{ipath},{lpath}")
    check_tensors(d)
    assert d.sample_shape == (1, 6, 7) and len(all_x(d)) == 20
    # Every image comes back /255 with its own label.
    x = all_x(d).numpy()[:, 0]
    y = all_y(d).numpy()
    for xi, yi in zip(x, y):
        match = [i for i in range(20) if np.allclose(imgs[i] / 255, xi)]
        assert len(match) == 1 and labels[match[0]] == yi


def test_idx_float_big_endian_without_labels(tmp_path):
    imgs = np.linspace(0, 1, 10 * 3 * 3).reshape(10, 3, 3)
    d = load_data(f"idx:{write_idx(tmp_path / 'f.idx', imgs, type_byte=0x0D)}")
    assert d.y_train is None
    assert np.allclose(sorted_rows(all_x(d)), sorted_rows(torch.tensor(imgs, dtype=torch.float32)))


def test_idx_wrong_magic(tmp_path):
    p = tmp_path / "a.idx"
    p.write_bytes(b"\x12\x34\x08\x03" + b"\0" * 40)
    with pytest.raises(AeoptError, match=r"wrong magic number 0x12340803 .*expected 0x0803.*IDX"):
        load_data(f"idx:{p}")


def test_idx_truncated(tmp_path):
    p = Path(write_idx(tmp_path / "a.idx", np.zeros((10, 4, 4), np.uint8)))
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(AeoptError, match=r"truncated.*needs 160 data bytes but the file has 155"):
        load_data(f"idx:{p}")


def test_idx_truncated_gzip(tmp_path):
    p = Path(write_idx(tmp_path / "a.gz", np.zeros((10, 4, 4), np.uint8), gz=True))
    p.write_bytes(p.read_bytes()[:-12])
    with pytest.raises(AeoptError, match="corrupt or truncated gzip"):
        load_data(f"idx:{p}")


def test_idx_label_count_mismatch(tmp_path):
    ipath = write_idx(tmp_path / "i", np.zeros((10, 4, 4), np.uint8))
    lpath = write_idx(tmp_path / "l", np.zeros(9, np.uint8))
    with pytest.raises(AeoptError, match="one label per sample"):
        load_data(f"idx:{ipath},{lpath}")


# --- npy / npz --------------------------------------------------------------------------


def test_npy_uint8_images(tmp_path):
    imgs = np.random.default_rng(2).integers(0, 256, (12, 5, 5)).astype(np.uint8)
    np.save(tmp_path / "x.npy", imgs)
    d = load_data(f"npy:{tmp_path / 'x.npy'}")
    check_tensors(d)
    assert d.is_image and d.sample_shape == (1, 5, 5) and d.y_train is None
    assert np.allclose(sorted_rows(all_x(d)), sorted_rows(torch.tensor(imgs / 255.0, dtype=torch.float32)))


def test_npy_channels_last_rgb(tmp_path):
    imgs = np.random.default_rng(3).random((9, 6, 7, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", imgs)
    d = load_data(f"npy:{tmp_path / 'x.npy'}")
    assert d.sample_shape == (3, 6, 7)
    expected = torch.from_numpy(imgs.transpose(0, 3, 1, 2).copy())
    assert np.array_equal(sorted_rows(all_x(d)), sorted_rows(expected))


def test_npy_float_images_out_of_range(tmp_path):
    np.save(tmp_path / "x.npy", np.full((5, 4, 4), 200.0))
    with pytest.raises(AeoptError, match=r"not \[0, 1\]: scale them"):
        load_data(f"npy:{tmp_path / 'x.npy'}")


def test_npy_table_standardized_on_train(tmp_path):
    rng = np.random.default_rng(4)
    table = rng.normal([5.0, -3.0, 100.0], [2.0, 0.5, 30.0], size=(200, 3))
    table[:, 2] = 7.0  # a constant column must not divide by zero
    np.save(tmp_path / "t.npy", table)
    d = load_data(f"npy:{tmp_path / 't.npy'}", seed=5)
    check_tensors(d)
    assert not d.is_image and d.sample_shape == (3,)
    assert np.allclose(d.x_train.mean(0).numpy(), 0, atol=1e-5)
    assert np.allclose(d.x_train.std(0, unbiased=False).numpy(), [1, 1, 0], atol=1e-4)
    assert d.scaler["std"][2] == 1.0 and d.scaler["mean"][2] == pytest.approx(7.0)
    assert not d.in_unit_range
    # The stored scaler reproduces the tensors from the raw rows.
    restored = all_x(d).numpy() * np.array(d.scaler["std"]) + np.array(d.scaler["mean"])
    assert np.allclose(sorted_rows(torch.tensor(restored)), sorted_rows(torch.tensor(table)), atol=1e-4)


def test_npy_nan(tmp_path):
    a = np.ones((10, 3))
    a[2, 1] = np.nan
    a[4, 0] = np.inf
    np.save(tmp_path / "x.npy", a)
    with pytest.raises(AeoptError, match="2 NaN/Inf values in .*clean or impute"):
        load_data(f"npy:{tmp_path / 'x.npy'}")


def test_npy_object_array_is_never_unpickled(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(AeoptError, match="object arrays are not supported; save a numeric array"):
        load_data(f"npy:{tmp_path / 'o.npy'}")


def test_npy_bad_shape_and_too_few_samples(tmp_path):
    np.save(tmp_path / "v.npy", np.ones(10))
    with pytest.raises(AeoptError, match="neither a table"):
        load_data(f"npy:{tmp_path / 'v.npy'}")
    np.save(tmp_path / "two.npy", np.ones((2, 4)))
    with pytest.raises(AeoptError, match="only 2 samples"):
        load_data(f"npy:{tmp_path / 'two.npy'}")


def test_npz_with_labels(tmp_path):
    imgs = np.random.default_rng(6).integers(0, 256, (15, 1, 4, 4)).astype(np.uint8)
    names = np.array(["cat", "dog", "ant"] * 5)
    np.savez(tmp_path / "d.npz", images=imgs, labels=names)
    d = load_data(f"npz:{tmp_path / 'd.npz'}")
    check_tensors(d)
    assert d.sample_shape == (1, 4, 4)
    # Strings map to sorted ids (ant=0, cat=1, dog=2); check each image kept its label.
    ids = {"ant": 0, "cat": 1, "dog": 2}
    for xi, yi in zip(all_x(d).numpy(), all_y(d).numpy()):
        i = next(i for i in range(15) if np.allclose(imgs[i] / 255, xi))
        assert ids[names[i]] == yi


def test_npz_ambiguous_arrays(tmp_path):
    np.savez(tmp_path / "d.npz", a=np.ones((5, 2)), b=np.ones((5, 2)))
    with pytest.raises(AeoptError, match="name it 'x'"):
        load_data(f"npz:{tmp_path / 'd.npz'}")


# --- image folders ----------------------------------------------------------------------


def test_image_folder_with_classes_and_resizing(tmp_path):
    for cls, shade in (("b_dark", 10), ("a_light", 240)):
        (tmp_path / cls).mkdir()
        for i, size in enumerate([(6, 4), (6, 4), (12, 8)]):  # PIL sizes are (width, height)
            Image.new("L", size, shade).save(tmp_path / cls / f"{i}.png")
    d = load_data(f"images:{tmp_path}")
    check_tensors(d)
    assert d.sample_shape == (1, 4, 6)  # the most common size, as (C, H, W)
    x, y = all_x(d), all_y(d)
    assert len(x) == 6 and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    for xi, yi in zip(x, y):  # a_light -> 0, b_dark -> 1
        assert torch.allclose(xi, torch.full_like(xi, 240 / 255 if yi == 0 else 10 / 255), atol=1e-6)
    assert load_data(f"images:{tmp_path}", image_size=(3, 5)).sample_shape == (1, 3, 5)


def test_image_folder_colour_makes_all_rgb(tmp_path):
    Image.new("L", (4, 4), 100).save(tmp_path / "g.png")
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "c.bmp")
    Image.new("L", (4, 4), 0).save(tmp_path / "k.jpg")
    d = load_data(f"images:{tmp_path}")
    assert d.sample_shape == (3, 4, 4) and d.y_train is None
    means = sorted_rows(all_x(d).mean(dim=(2, 3)))
    assert np.allclose(means, [[0, 0, 0], [100 / 255] * 3, [1, 0, 0]], atol=0.02)


def test_image_folder_unreadable_and_empty(tmp_path):
    Image.new("L", (4, 4)).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    with pytest.raises(AeoptError, match=r"cannot read image .*broken\.png"):
        load_data(f"images:{tmp_path}")
    # A valid header with cut-off pixel data only fails when the pixels are decoded.
    (tmp_path / "broken.png").unlink()
    Image.fromarray(np.random.default_rng(8).integers(0, 256, (64, 64), np.uint8)).save(tmp_path / "cut.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:200])
    with pytest.raises(AeoptError, match=r"cannot read image .*cut\.png"):
        load_data(f"images:{tmp_path}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AeoptError, match="no PNG/JPEG/BMP images found"):
        load_data(f"images:{empty}")


# --- csv --------------------------------------------------------------------------------


def test_csv_with_header_and_labels(tmp_path):
    rng = np.random.default_rng(7)
    feats = rng.normal(10, 3, size=(40, 2))
    kinds = ["setosa", "virginica"]
    lines = ["a,label,b"] + [f"{f[0]},{kinds[i % 2]},{f[1]}" for i, f in enumerate(feats)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    d = load_data(f"csv:{tmp_path / 't.csv'}")
    check_tensors(d)
    assert not d.is_image and d.sample_shape == (2,)
    assert np.allclose(d.x_train.mean(0).numpy(), 0, atol=1e-5)
    assert np.allclose(d.x_train.std(0, unbiased=False).numpy(), 1, atol=1e-4)
    assert sorted(all_y(d).tolist()) == [0] * 20 + [1] * 20
    # Column "a" went first, "b" second; the label column is not a feature.
    restored = all_x(d).numpy() * np.array(d.scaler["std"]) + np.array(d.scaler["mean"])
    assert np.allclose(sorted_rows(torch.tensor(restored)), sorted_rows(torch.tensor(feats)))


def test_csv_without_header(tmp_path):
    (tmp_path / "t.csv").write_text("1,2\n3,4\n5,6\n7,9\n")
    d = load_data(f"csv:{tmp_path / 't.csv'}")
    assert len(all_x(d)) == 4 and d.y_train is None


def test_csv_errors(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(AeoptError, match="table is empty"):
        load_data(f"csv:{tmp_path / 'empty.csv'}")
    (tmp_path / "head.csv").write_text("a,b\n")
    with pytest.raises(AeoptError, match="table is empty"):
        load_data(f"csv:{tmp_path / 'head.csv'}")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,oops\n5,6\n")
    with pytest.raises(AeoptError, match=r"non-numeric value 'oops' in column 'b' at line 3"):
        load_data(f"csv:{tmp_path / 'bad.csv'}")
    (tmp_path / "nan.csv").write_text("a,b\n1,2\n3,nan\n5,6\n")
    with pytest.raises(AeoptError, match="1 NaN/Inf values"):
        load_data(f"csv:{tmp_path / 'nan.csv'}")


# --- general errors and helpers ---------------------------------------------------------


def test_missing_file_and_unknown_spec(tmp_path):
    with pytest.raises(AeoptError, match=f"no such file: {tmp_path}/nope.npy"):
        load_data(f"npy:{tmp_path}/nope.npy")
    with pytest.raises(AeoptError, match="unknown data source 'cifar'.*npy:PATH"):
        load_data("cifar")
    assert "digits" in KNOWN_SOURCES and "csv:PATH" in KNOWN_SOURCES


@pytest.mark.parametrize("kwargs, fragment", [
    ({"limit": 0}, "limit must be a positive integer"),
    ({"val_fraction": 0.0}, "val_fraction must be between 0 and 1"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "leaves no training data"),
    ({"seed": -1}, "seed must be a non-negative integer"),
])
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(AeoptError, match=fragment):
        load_data(**kwargs)


def test_standardize_applies_scaler_and_checks_columns():
    scaler = {"mean": [1.0, 2.0], "std": [2.0, 1.0]}
    out = standardize(np.array([[3.0, 2.0], [1.0, 0.0]]), scaler)
    assert out.dtype == np.float32 and np.allclose(out, [[1, 0], [0, -2]])
    with pytest.raises(AeoptError, match="2 columns"):
        standardize(np.ones((2, 3)), scaler)


def test_load_array_file(tmp_path):
    Image.new("RGB", (5, 3), (255, 0, 51)).save(tmp_path / "p.png")
    a = load_array_file(str(tmp_path / "p.png"))
    assert a.dtype == np.float32 and a.shape == (1, 3, 3, 5)
    assert np.allclose(a[0, :, 0, 0], [1, 0, 0.2])
    np.save(tmp_path / "b.npy", np.full((2, 4, 4, 1), 255, np.uint8))
    b = load_array_file(str(tmp_path / "b.npy"))
    assert b.shape == (2, 1, 4, 4) and b.dtype == np.float32 and (b == 1).all()
    np.save(tmp_path / "t.npy", np.arange(6).reshape(2, 3))
    assert np.array_equal(load_array_file(str(tmp_path / "t.npy")), [[0, 1, 2], [3, 4, 5]])
    (tmp_path / "junk.txt").write_text("hello")
    with pytest.raises(AeoptError, match="not a .npy array or a readable image"):
        load_array_file(str(tmp_path / "junk.txt"))
    with pytest.raises(AeoptError, match="no such file"):
        load_array_file(str(tmp_path / "missing.png"))
