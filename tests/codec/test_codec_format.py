"""The .aec container and the stream decoder under hostile input: one AeoptError, never a crash."""
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aeopt.codec import container
from aeopt.codec.api import decompress_images, load_codec
from aeopt.errors import AeoptError

FP = bytes(range(32))
OTHER = bytes(range(1, 33))


def _file(sizes, stream=b"\x01\x02\x03\x04", **kw):
    return container.pack(sizes, stream, rgb=False, fingerprint=FP, **kw)


def _resealed(body: bytes) -> bytes:
    """A body with a valid checksum, so the parser behind the checksum gets exercised too."""
    return container.seal(body, FP)


def test_round_trip_single_and_many_with_sizes():
    assert container.unpack(_file([(28, 28)]), fingerprint=FP) == (False, [(28, 28)], [(0, 1, b"\x01\x02\x03\x04")])
    sizes = [(28, 28), (5, 300), (28, 28), (1, 1)]
    assert container.unpack(_file(sizes, b"abcdefgh"), fingerprint=FP) == (False, sizes, [(0, 4, b"abcdefgh")])
    implied = _file([(28, 28)], model_size=(28, 28))
    assert len(implied) == len(_file([(28, 28)])) - 2 == 7 + 4  # header 5, stream 4, short check 2
    assert container.unpack(implied, fingerprint=FP, model_size=(28, 28))[1] == [(28, 28)]


def test_short_files_end_in_a_two_byte_check_and_others_keep_crc32():
    short = _file([(28, 28)], b"s" * 40)
    assert short[2] >> 4 == 4 and short[2] & container.FLAG_SHORT_CHECK
    assert len(short) == 5 + 2 + 40 + 2  # header, size, stream, check
    long_ = _file([(28, 28)], b"s" * 300)  # 307 bytes before the check: version 2, as older readers read
    assert long_[2] >> 4 == 2 and not long_[2] & container.FLAG_SHORT_CHECK and len(long_) == 5 + 2 + 300 + 4
    edge = _file([(28, 28)], b"s" * (container.SHORT_CHECK_BELOW - 7))  # exactly 256 bytes before the check
    assert edge[2] >> 4 == 2 and len(edge) == container.SHORT_CHECK_BELOW + 4
    # one stream for sizes that make two slices (the unsliced form) stays version 2: a version 4 reader
    # would look for slice lengths in it
    unsliced = _file([(1, 1)] * (container.SLICE_IMAGES + 1), b"x")
    assert unsliced[2] >> 4 == 2
    for data, stream in ((short, b"s" * 40), (long_, b"s" * 300), (unsliced, b"x")):
        assert container.unpack(data, fingerprint=FP)[2][-1][2] == stream


def test_every_flipped_bit_and_every_cut_of_a_short_file_is_refused():
    data = _file([(28, 28)], bytes(range(7, 37)))
    assert data[2] & container.FLAG_SHORT_CHECK
    for bit in range(8 * len(data)):  # a CRC-16 catches every error of 1 to 3 bits: none may pass
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << bit % 8
        with pytest.raises(AeoptError):
            container.unpack(bytes(flipped), fingerprint=FP)
    for end in range(len(data)):
        with pytest.raises(AeoptError):
            container.unpack(data[:end], fingerprint=FP)


def test_a_short_file_of_another_model_with_the_same_id_fails_the_check():
    twin = FP[:2] + bytes(range(100, 130))  # the same 2-byte model id, another fingerprint
    with pytest.raises(AeoptError, match="checksum does not match"):
        container.unpack(_file([(8, 8)]), fingerprint=twin)


def test_many_image_files_cost_no_bytes_per_same_size_image():
    data = _file([(28, 28)] * 10_000, b"x" * 400_000, model_size=(28, 28))
    assert len(data) - 400_000 == 5 + 4 + 2 + 1  # header, checksum, the count (2 bytes), "0 other sizes"


@pytest.mark.parametrize("data, message", [
    (b"", "is empty"),
    (b"PK\x03\x04" + b"\0" * 20, "wrong magic"),
    (b"\xae", "truncated"),
    (b"\xae\xc0\x10\x00\x01", "truncated"),
    (b"\xae\xc0\x50\x00\x01" + b"\0" * 10, "format version 5; this aeopt reads versions up to 4: upgrade"),
    (b"\xae\xc0\xf0\x00\x01" + b"\0" * 10, "format version 15"),
    (b"\xae\xc0\x00\x00\x01" + b"\0" * 10, "version 0 does not exist"),
    (b"\xae\xc0\x18" + FP[:2] + b"\0" * 10, "unknown flag bits 0x08 for format version 1"),
    (b"\xae\xc0\x38" + FP[:2] + b"\0" * 10, "unknown flag bits 0x08 for format version 3"),
    (b"\xae\xc0\x48" + FP[:1], "truncated (4 bytes; this .aec file needs at least 7)"),
])
def test_bad_headers_name_the_problem(data, message):
    with pytest.raises(AeoptError, match=re.escape(message)):
        container.unpack(data, fingerprint=FP)


def test_another_models_file_and_a_bad_checksum():
    data = _file([(8, 8)])
    with pytest.raises(AeoptError, match="another model"):
        container.unpack(data, fingerprint=OTHER)
    flipped = bytearray(data)
    flipped[-6] ^= 0x10
    with pytest.raises(AeoptError, match="checksum does not match"):
        container.unpack(bytes(flipped), fingerprint=FP)


@pytest.mark.parametrize("body, message", [
    (container.MAGIC + b"\x10" + FP[:2] + b"\xff\xff\x7f\x05", "declares a 2097151x5 image"),
    (container.MAGIC + b"\x10" + FP[:2] + b"\x80\x80\x02\x80\x80\x02", "over the limit of 67,108,864 pixels"),
    (container.MAGIC + b"\x12" + FP[:2] + b"\x08\x08\xff\xff\xff\xff\x0f\x00", "declares 4,294,967,295 images"),
    (container.MAGIC + b"\x12" + FP[:2] + b"\x80\x08\x80\x08\x80\x02\x00", "over the limits"),
    (container.MAGIC + b"\x12" + FP[:2] + b"\x08\x08\x03\x03", "inconsistent"),
    (container.MAGIC + b"\x12" + FP[:2] + b"\x08\x08\x03\x02\x01\x04\x04\x01\x04\x04", "out of order"),
    (container.MAGIC + b"\x12" + FP[:2] + b"\x08\x08\x03\x01\x05\x04\x04", "out of order or range"),
    (container.MAGIC + b"\x12" + FP[:2] + b"\x01\x01\x03\x01\x01\xff\x7f\xff\x7f", "more than 67,108,864"),
    (container.MAGIC + b"\x10" + FP[:2] + b"\x80\x10\x80\x10" + b"\0" * 8, "pixels for a 8-byte stream"),
    (container.MAGIC + b"\x10" + FP[:2] + b"\x08", "truncated (it ends inside the width field)"),
    (container.MAGIC + b"\x10" + FP[:2] + b"\xff" * 8, "not a valid number"),
])
def test_huge_or_inconsistent_declared_sizes_are_refused_before_allocating(body, message):
    with pytest.raises(AeoptError, match=re.escape(message)):
        container.unpack(_resealed(body), fingerprint=FP)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=80))
def test_fuzz_random_bytes_only_aeopt_errors(data):
    for candidate in (data, container.MAGIC + data, _resealed(container.MAGIC + data)):
        try:
            container.unpack(candidate, fingerprint=FP)
        except AeoptError as err:
            assert "\n" not in str(err)


@pytest.fixture(scope="module", params=["hyperprior", "channelwise"])
def hyper_run(codec_runs, request):
    """A scale hyperprior and the channel-wise model, whose decoder computes rows from what it decoded."""
    from aeopt.codec import compress

    run = load_codec(codec_runs[request.param])
    images = list((np.random.default_rng(0).random((3, 1, 8, 8)) * 255).astype(np.uint8))
    return run, compress(run, images), compress(run, images[0])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_mutated_files_never_crash_or_hang(hyper_run, data):
    run, many, one = hyper_run
    original = data.draw(st.sampled_from([many, one]))
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "reseal"]))
    blob = bytearray(original)
    if kind == "flip":
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "insert":
        pos = data.draw(st.integers(0, len(blob)))
        blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    else:  # damage behind a valid checksum: the stream decoder itself must cope
        body = bytearray(original[:-container.check_bytes(original[2])])
        pos = data.draw(st.integers(container.HEADER_BYTES, len(body) - 1))
        body[pos] = data.draw(st.integers(0, 255))
        blob = bytearray(container.seal(bytes(body), run.tables.fingerprint))
    try:
        images = decompress_images(run, bytes(blob))
    except AeoptError as err:
        assert "\n" not in str(err)
    else:
        # a 2-byte check (short files) catches every flip of 1 to 3 bits; other damage passes it with
        # probability 2**-16, and then the decoder must still give well-formed images
        short = bool(original[2] & container.FLAG_SHORT_CHECK)
        assert kind == "reseal" or bytes(blob) == original or (short and kind in ("truncate", "insert"))
        assert all(im.dtype == np.uint8 and im.shape[0] == 1 for im in images)
