"""The stream's last word cut short (format version 2, coder.trimmed), and version 1 files still read."""

import numpy as np
import constriction
import torch

from aeopt.codec import coder, compress, container, decompress, load_codec
from aeopt.codec.api import latents
from aeopt.data import load_data

P = np.array([0.6, 0.2, 0.1, 0.05, 0.05])


def _model():
    return constriction.stream.model.Categorical(P, perfect=False)


def _decodes(stream: bytes, symbols: np.ndarray) -> bool:
    try:
        return np.array_equal(coder.start_decoder(stream).decode(_model(), len(symbols)), symbols)
    except (AssertionError, ValueError):
        return False


def test_trimmed_streams_decode_the_same_symbols_and_save_most_of_the_last_word():
    rng = np.random.default_rng(0)
    saved = []
    for _ in range(300):
        symbols = rng.choice(5, int(rng.integers(1, 150)), p=P).astype(np.int32)
        encoder = coder.new_encoder()
        encoder.encode(symbols, _model())
        full = coder.finish(encoder)
        cut = coder.trimmed(full, lambda s: _decodes(s, symbols))
        assert _decodes(cut, symbols) and len(cut) <= len(full)
        saved.append(len(full) - len(cut))
    assert np.mean(saved) > 1.4  # of the ~2 bytes a whole-word ending wastes
    big = bytes(coder.TRIM_BELOW)
    assert coder.trimmed(big, lambda s: True) is big  # long streams are left whole


def _digits(n=40):
    return (load_data("digits", seed=0).x_test[:n] * 255).round().byte().numpy()


def test_single_image_files_are_shorter_and_decode_exactly(codec_runs):
    run = load_codec(codec_runs["hyperprior"])
    torch.set_num_threads(1)
    images = _digits()
    files = [compress(run, im) for im in images]
    _, parts = latents(run, images)
    part = parts[0]
    whole = [coder.finish(_encoded(run, part, k)) for k in range(len(images))]
    assert np.mean([len(w) + 7 - len(f) for w, f in zip(whole, files)]) > 1.0  # 7: header + short check
    expected = torch.round(run.model.reconstruct_quantized(torch.from_numpy(images).float() / 255) * 255)
    decoded = np.concatenate([decompress(run, f) for f in files])
    np.testing.assert_array_equal(decoded, expected.to(torch.uint8).numpy())


def _encoded(run, part, k):
    encoder = coder.new_encoder()
    run.coder.encode_into(encoder, part.y[k:k + 1], part.z[k:k + 1], part.rows[k:k + 1])
    return encoder


def test_a_version_1_file_with_whole_words_still_decodes(codec_runs):
    run = load_codec(codec_runs["hyperprior"])
    images = _digits(12)
    _, [part] = latents(run, images)
    encoder = coder.new_encoder()
    run.coder.encode_into(encoder, part.y, part.z, part.rows)
    new = run.pack([tuple(images.shape[-2:])] * len(images), coder.finish(encoder))
    body = bytearray(new[:-container.check_bytes(new[2])])
    body[2] = (1 << 4) | (body[2] & (15 - container.FLAG_SHORT_CHECK))  # version 1: CRC-32 only
    old = container.seal(bytes(body), run.tables.fingerprint)
    np.testing.assert_array_equal(decompress(run, old), decompress(run, compress(run, images)))
