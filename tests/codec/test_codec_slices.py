"""Format version 3: a many-image file in independent slices, coded and decoded on several threads."""
import re

import numpy as np
import pytest
import torch

from aeopt.codec import compress, container, decompress, decompress_images, load_codec
from aeopt.codec.evaluate import measure
from aeopt.codec.parallel import in_parallel
from aeopt.errors import AeoptError

FP = bytes(range(32))


def _images(n, h=8, w=8, seed=0):
    return list((np.random.default_rng(seed).random((n, 1, h, w)) * 255).astype(np.uint8))


def test_slices_close_at_the_image_or_pixel_limit():
    assert container.slices([(28, 28)] * 2500) == [(0, 1024), (1024, 2048), (2048, 2500)]
    assert container.slices([(28, 28)] * 1024) == [(0, 1024)]
    photos = [(512, 768)] * 25  # 393,216 pixels each: 11 reach 2**22
    assert container.slices(photos) == [(0, 11), (11, 22), (22, 25)]
    assert container.slices([(1, 1)]) == [(0, 1)]


def test_a_sliced_file_stores_each_slices_length_and_only_it_is_version_3():
    sizes = [(8, 8)] * 2100
    streams = [b"a" * 300, b"b" * 5, b"c" * 7]
    data = container.pack(sizes, streams, rgb=False, fingerprint=FP)
    assert data[2] >> 4 == 3
    assert container.unpack(data, fingerprint=FP)[2] == [(0, 1024, streams[0]), (1024, 2048, streams[1]),
                                                         (2048, 2100, streams[2])]
    # header 5 + size 2 + count 2 + "no other sizes" 1 + lengths 2 + 1, streams, checksum 4
    assert len(data) == 5 + 2 + 2 + 1 + 3 + 312 + 4
    unsliced = container.pack(sizes, b"abc", rgb=False, fingerprint=FP)
    assert unsliced[2] >> 4 == 2 and container.unpack(unsliced, fingerprint=FP)[2] == [(0, 2100, b"abc")]
    with pytest.raises(AeoptError, match="2 streams for 3 slices"):
        container.pack(sizes, streams[:2], rgb=False, fingerprint=FP)


@pytest.mark.parametrize("lengths, message", [
    (b"\xff\x7f\x01", "slices claim"),
    (b"\x05", "truncated (it ends inside the slice length field)"),
])
def test_slice_lengths_that_do_not_fit_are_refused(lengths, message):
    body = container.MAGIC + b"\x32" + FP[:2] + b"\x08\x08\xb4\x10\x00" + lengths  # 2100 8x8 images
    data = container.seal(body, FP)
    with pytest.raises(AeoptError, match=re.escape(message)):
        container.unpack(data, fingerprint=FP)


@pytest.fixture
def small_slices(monkeypatch):
    monkeypatch.setattr(container, "SLICE_IMAGES", 16)


def test_threads_do_not_change_the_file_or_the_decoded_images(codec_runs, small_slices):
    run = load_codec(codec_runs["hyperprior"])
    images = _images(50, seed=3) + _images(3, 13, 21, seed=4)  # 4 slices, the last two sizes mixed
    threads = torch.get_num_threads()
    one, two = compress(run, images, workers=1), compress(run, images, workers=2)
    assert torch.get_num_threads() == threads  # the workers' one-thread setting is handed back
    assert one == two and one[2] >> 4 == 3
    assert len(run.unpack(one, "x")[1]) == 4
    decoded = decompress_images(run, one, workers=2)
    assert all(np.array_equal(a, b) for a, b in zip(decoded, decompress_images(run, one, workers=1)))
    for a, b in ((0, 16), (16, 32), (32, 48), (48, 50)):  # the encoder's batches: slice by slice, size by size
        x = torch.from_numpy(np.stack(images[a:b])).float() / 255
        expected = torch.round(run.model.reconstruct_quantized(x) * 255).to(torch.uint8).numpy()
        assert np.array_equal(np.stack(decoded[a:b]), expected)
    assert [im.shape for im in decoded[50:]] == [(1, 13, 21)] * 3
    figures = measure(run, images)
    assert figures["batch_file"]["bytes"] == len(one)  # the figures count the file compress writes
    largest = max(len(compress(run, [image])) for image in images)
    assert figures["max_file_bytes"] == largest  # the one-image file a reader must budget for


def test_a_damaged_slice_is_one_error_from_any_thread(codec_runs, small_slices):
    run = load_codec(codec_runs["factorized"])
    data = bytearray(compress(run, _images(40, seed=5), workers=2))
    sizes, slices = run.unpack(bytes(data), "x")
    assert len(slices) == 3
    body = bytes(data[:-container.check_bytes(data[2])])
    start = body.index(slices[1][2])
    cut = body[:start] + b"\xff" * len(slices[1][2]) + body[start + len(slices[1][2]):]
    resealed = container.seal(cut, run.tables.fingerprint)
    try:
        images = decompress(run, resealed)
    except AeoptError as err:
        assert "damaged" in str(err) and "\n" not in str(err)
    else:  # garbage may still decode (a range decoder reads any bytes): then only that slice differs
        good = decompress(run, bytes(data))
        assert np.array_equal(images[:16], good[:16]) and np.array_equal(images[32:], good[32:])


def test_workers_are_checked_and_errors_cross_threads():
    with pytest.raises(AeoptError, match="workers must be"):
        in_parallel(str, [1, 2], workers=0)

    def fails(job):
        if job == 3:
            raise AeoptError("job 3 is bad")
        return job * 2

    assert in_parallel(fails, [1, 2], workers=2) == [2, 4]
    with pytest.raises(AeoptError, match="job 3 is bad"):
        in_parallel(fails, [1, 2, 3, 4], workers=2)


def test_an_error_drops_the_jobs_not_yet_started():
    import threading
    import time

    started = []
    lock = threading.Lock()

    def slow(job):
        with lock:
            started.append(job)
        if job == 0:
            raise AeoptError("first job failed")
        time.sleep(0.05)
        return job

    with pytest.raises(AeoptError, match="first job failed"):
        in_parallel(slow, list(range(40)), workers=2)
    assert len(started) < 10  # not all 40 ran after the failure


def test_cli_workers_flag_gives_the_same_files(codec_runs, tmp_path, capsys):
    from aeopt.cli import main

    run_dir = codec_runs["hyperprior"]
    for workers in ("1", "2"):
        assert main(["compress", str(run_dir), "--data", "digits", "--out", str(tmp_path / f"w{workers}.aec"),
                     "--workers", workers, "--quiet"]) == 0
    one, two = (tmp_path / "w1.aec").read_bytes(), (tmp_path / "w2.aec").read_bytes()
    assert one == two and one[2] >> 4 == 3  # 1,797 digits: 2 slices
    assert main(["decompress", str(tmp_path / "w2.aec"), "--out", str(tmp_path / "png"), "--workers", "2",
                 "--quiet"]) == 0
    assert len(list((tmp_path / "png").iterdir())) == 1797
    assert main(["compress", str(run_dir), "--data", "digits", "--out", str(tmp_path / "x.aec"),
                 "--workers", "0"]) == 2
    assert "workers must be a whole number" in capsys.readouterr().err
    assert not (tmp_path / "x.aec").exists()


def test_a_version_2_file_of_more_images_than_a_slice_still_decodes(codec_runs, monkeypatch):
    """Older writers coded every image of a many-image file into one stream in chunks() order."""
    from aeopt.codec import coder
    from aeopt.codec.api import latents

    run = load_codec(codec_runs["hyperprior"])
    images = _images(40, seed=6) + _images(5, 13, 21, seed=7)
    monkeypatch.setattr(container, "SLICE_IMAGES", 10 ** 9)  # the old writer: one slice
    sizes, parts = latents(run, images)
    encoder = coder.new_encoder()
    for part in parts:
        run.coder.encode_into(encoder, part.y, part.z, part.rows)
    monkeypatch.setattr(container, "SLICE_IMAGES", 16)  # today's reader would cut 45 images into 3 slices
    old = run.pack(sizes, coder.finish(encoder))
    assert old[2] >> 4 == 2
    assert compress(run, images, workers=2)[2] >> 4 == 3
    decoded = decompress_images(run, old, workers=2)
    for group in (slice(0, 40), slice(40, 45)):  # the old writer's two chunks, one per size
        x = torch.from_numpy(np.stack(images[group])).float() / 255
        expected = torch.round(run.model.reconstruct_quantized(x) * 255).to(torch.uint8).numpy()
        assert np.array_equal(np.stack(decoded[group]), expected)
