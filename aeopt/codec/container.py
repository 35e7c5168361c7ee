"""The .aec container, format version 4: every byte accounted for, every field checked.

    magic       2 bytes  AE C0 (0xAE first: not text, not another common format's signature)
    version     1 byte   high 4 bits: FORMAT_VERSION (a reader refuses newer versions by name);
      + flags            low 4 bits: bit 0 RGB (else grey), bit 1 many images, bit 2 the image(s)
                         have the model's training size (no height/width fields), bit 3 (version 4
                         only, else 0) the checksum is the short one
    model       2 bytes  the first 2 bytes of the model's fingerprint (sha256 of weights + tables)
    [height]    varint   (LEB128) absent with bit 2; with many images, the first image's size
    [width]     varint
    [count]     varint   many images only: how many
    [others]    varint   many images only: how many images differ in size from the first, then
                         for each: its index, height and width (varints)
    [lengths]   varints  version 3, many images only: the byte length of every slice's stream but
                         the last (slices(): a fixed split of the images, derived from their sizes)
    streams     bytes    the range-coded stream of each slice's images (coder.py), up to the checksum;
                         one slice (no lengths) is the whole file in versions 1 and 2. Version 2+
                         streams may end inside their last 32-bit word (a reader pads it with zero
                         bytes: coder.trimmed); version 1 streams are whole words, read the same way
    checksum    4 bytes  CRC-32 (big-endian) of the model's full 32-byte fingerprint followed by
                         every byte above: damage, truncation and another model's file all fail it;
                or  2 bytes  with bit 3: CRC-16/CCITT (binascii.crc_hqx) of the same bytes, seeded with
                         the fingerprint's CRC-16; written for files of under SHORT_CHECK_BELOW bytes

Why so lean: on 28x28 images a learned codec's stream is a few dozen bytes, so a 16-byte header
would be a third of the file. The 2-byte model id gives the "another model" message; the checksum,
seeded with the whole 256-bit fingerprint, is what makes that check reliable (a file of another
model passes with probability 2**-32). A file of under SHORT_CHECK_BELOW bytes (one Fashion-MNIST
image: 30-130) ends in a 2-byte CRC-16 instead of the 4-byte CRC-32, 2-6% of such a file: it still
catches every error of 1 to 3 bits and every burst of up to 16 in a file that short, other damage
passes it with probability 2**-16 (then the stream decoder copes, as it must with any bytes), and
another model's file passes model id and check together with probability 2**-32. One image costs 7
bytes besides its stream (9 with its size), each further image of a many-image file one to three
bytes. Slices are what lets a many-image file be coded and decoded on several cores: each is an
independent stream of about SLICE_IMAGES images (a few bytes each: 0.01 bytes an image). A writer
uses version 3 only for a file of several slices and version 4 only for a short-check file, so every
other file an older reader could read is still written for it. Sizes are capped (MAX_SIDE,
MAX_PIXELS) before anything is allocated, so a hostile header cannot ask for gigabytes.
"""
from __future__ import annotations

import binascii
import zlib

from ..errors import AeoptError

MAGIC = b"\xae\xc0"
# 4: the short check; 3: slices; 2: streams may end inside a word (1.8 bytes less per file); 1 still read
FORMAT_VERSION = 4
UNSLICED_VERSION = 2  # what a file of one slice (and a long check) is written as: older readers read it
SLICED_VERSION = 3  # a file of several slices (and a long check)
# A slice closes at SLICE_IMAGES images or SLICE_PIXELS pixels: 10 slices in 10,000 Fashion-MNIST
# images (enough to keep 2..10 cores busy), one in a file of a few photos.
SLICE_IMAGES, SLICE_PIXELS = 1024, 1 << 22
MAX_SIDE = 1 << 15
MAX_PIXELS = 1 << 26  # 64 Mpixel over the whole file: the decoder's working memory stays a few GB at most
MAX_IMAGES = 1 << 20
# Decoding work must be in proportion to the file: past FREE_PIXELS, a file needs a stream byte per
# PIXELS_PER_BYTE pixels (a real photo at 0.1 bpp has one per 80; a hostile 30-byte header claiming
# 64 Mpixel would otherwise keep the decoder busy for minutes and allocate gigabytes).
FREE_PIXELS, PIXELS_PER_BYTE = 1 << 20, 4096
FLAG_RGB, FLAG_MANY, FLAG_MODEL_SIZE, FLAG_SHORT_CHECK = 1, 2, 4, 8
HEADER_BYTES = 5  # magic, version + flags, model id
CHECKSUM_BYTES, SHORT_CHECK_BYTES = 4, 2
# Below this many bytes before the check, a file ends in the 2-byte check: there the 2 bytes saved are
# 2-6% of the file (0.66 points of BD-rate each on Fashion-MNIST: benchmarks/results/design_notes.md),
# above it under 1%, not worth the weaker check.
SHORT_CHECK_BELOW = 256


def seal(body: bytes, fingerprint: bytes) -> bytes:
    """`body` (a whole file but its check) with its check appended: the short one where its flags say so."""
    if len(body) > 2 and body[2] & FLAG_SHORT_CHECK:
        return body + binascii.crc_hqx(body, binascii.crc_hqx(fingerprint, 0)).to_bytes(SHORT_CHECK_BYTES, "big")
    return body + zlib.crc32(body, zlib.crc32(fingerprint)).to_bytes(CHECKSUM_BYTES, "big")


def check_bytes(flags: int) -> int:
    """The check's length for these flags (or the whole version-and-flags byte: bit 3 is the same)."""
    return SHORT_CHECK_BYTES if flags & FLAG_SHORT_CHECK else CHECKSUM_BYTES


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes, end: int, what: str):
        self.data, self.pos, self.end, self.what = data, HEADER_BYTES, end, what

    def varint(self, field: str) -> int:
        value = shift = 0
        while True:
            if self.pos >= self.end:
                raise AeoptError(f"{self.what} is truncated (it ends inside the {field} field)")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 35:
                raise AeoptError(f"{self.what} is damaged (the {field} field is not a valid number)")

    def size(self) -> tuple[int, int]:
        h, w = self.varint("height"), self.varint("width")
        if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
            raise AeoptError(f"{self.what} declares a {h}x{w} image, outside 1..{MAX_SIDE} pixels a side: "
                             "the file is damaged or not from aeopt")
        return h, w


def slices(sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(start, end) image ranges of a version 3 file's slices, from the image sizes alone: in order,
    each closed when it holds SLICE_IMAGES images or SLICE_PIXELS pixels."""
    out, start, pixels = [], 0, 0
    for i, (h, w) in enumerate(sizes):
        pixels += h * w
        if i + 1 - start >= SLICE_IMAGES or pixels >= SLICE_PIXELS:
            out.append((start, i + 1))
            start, pixels = i + 1, 0
    if start < len(sizes):
        out.append((start, len(sizes)))
    return out


def pack(sizes: list[tuple[int, int]], streams: "bytes | list[bytes]", *, rgb: bool, fingerprint: bytes,
         model_size: tuple[int, int] | None = None) -> bytes:
    """One .aec file: `streams` holds one stream per slice (slices(sizes)), or one stream for all images
    (an unsliced file, as versions 1 and 2 are); `model_size` (the model's training size) lets a file of
    that size skip its size."""
    if not sizes:
        raise AeoptError("no images to pack")
    streams = [streams] if isinstance(streams, (bytes, bytearray)) else list(streams)
    n_slices = len(slices(sizes))
    if len(streams) not in (1, n_slices):
        raise AeoptError(f"{len(streams)} streams for {n_slices} slices")
    first = tuple(sizes[0])
    implied = model_size is not None and first == tuple(model_size)
    many = len(sizes) > 1
    flags = (FLAG_RGB if rgb else 0) | (FLAG_MANY if many else 0) | (FLAG_MODEL_SIZE if implied else 0)
    version = SLICED_VERSION if len(streams) > 1 else UNSLICED_VERSION
    out = bytearray(MAGIC + bytes([version << 4 | flags]) + fingerprint[:2])
    if not implied:
        out += _varint(first[0]) + _varint(first[1])
    if many:
        others = [(i, s) for i, s in enumerate(sizes) if tuple(s) != first]
        out += _varint(len(sizes)) + _varint(len(others))
        for i, (h, w) in others:
            out += _varint(i) + _varint(h) + _varint(w)
    if version >= 3 and many:
        for stream in streams[:-1]:
            out += _varint(len(stream))
    out += b"".join(streams)
    # version 4 is version 3 with the check's flag: a file of one slice reads the same as in version 2
    if len(out) < SHORT_CHECK_BELOW and (len(streams) > 1 or n_slices == 1):
        out[2] = FORMAT_VERSION << 4 | flags | FLAG_SHORT_CHECK
    return seal(bytes(out), fingerprint)


def read_header(data: bytes, what: str = "the file") -> tuple[int, int, bytes]:
    """(version, flags, model id) after the magic and version checks; no model needed yet."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AeoptError(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) == 0:
        raise AeoptError(f"{what} is empty (0 bytes): not an aeopt codec file")
    if data[:2] != MAGIC[:len(data[:2])]:
        raise AeoptError(f"{what} is not an aeopt codec file (wrong magic bytes {data[:2].hex()})")
    if len(data) < 3:
        raise AeoptError(f"{what} is truncated ({len(data)} bytes; an .aec file has at least "
                         f"{HEADER_BYTES + SHORT_CHECK_BYTES})")
    version, flags = data[2] >> 4, data[2] & 0x0F
    if version > FORMAT_VERSION:
        raise AeoptError(f"{what} uses .aec format version {version}; this aeopt reads versions up to "
                         f"{FORMAT_VERSION}: upgrade aeopt to read it")
    if version == 0:
        raise AeoptError(f"{what} is damaged (format version 0 does not exist)")
    if flags & FLAG_SHORT_CHECK and version < 4:
        raise AeoptError(f"{what} is damaged (unknown flag bits {flags:#04x} for format version {version})")
    if len(data) < HEADER_BYTES + check_bytes(flags):
        raise AeoptError(f"{what} is truncated ({len(data)} bytes; this .aec file needs at least "
                         f"{HEADER_BYTES + check_bytes(flags)})")
    return version, flags, data[3:HEADER_BYTES]


def unpack(data: bytes, *, fingerprint: bytes, what: str = "the file",
           model_size: tuple[int, int] | None = None
           ) -> tuple[bool, list[tuple[int, int]], list[tuple[int, int, bytes]]]:
    """(rgb, image sizes, slices) of a file written for the model with this fingerprint, each slice
    (first image, end image, its stream); AeoptError otherwise."""
    version, flags, model_id = read_header(data, what)
    data = bytes(data)
    if model_id != fingerprint[:2]:
        raise AeoptError(f"{what} was compressed with another model (id {model_id.hex()}, this run's is "
                         f"{fingerprint[:2].hex()}); decompress it with the run that wrote it (--run)")
    body_end = len(data) - check_bytes(flags)
    if seal(data[:body_end], fingerprint) != data:
        raise AeoptError(f"{what} is damaged or from another model: its checksum does not match "
                         "(truncated or altered)")
    reader = _Reader(data, body_end, what)
    if flags & FLAG_MODEL_SIZE:
        if model_size is None:
            raise AeoptError(f"{what} relies on the model's image size, which this run does not record")
        first = tuple(model_size)
    else:
        first = reader.size()
    if first[0] * first[1] > MAX_PIXELS:
        raise AeoptError(f"{what} declares a {first[0]}x{first[1]} image, over the limit of {MAX_PIXELS:,} "
                         "pixels: the file is damaged or hostile")
    if not flags & FLAG_MANY:
        _check_work(first[0] * first[1], body_end - reader.pos, what)
        return bool(flags & FLAG_RGB), [first], [(0, 1, data[reader.pos:body_end])]
    count, n_others = reader.varint("image count"), reader.varint("size list")
    pixels = (count - n_others) * first[0] * first[1]
    if not 2 <= count <= MAX_IMAGES or n_others >= count or n_others > body_end or pixels > MAX_PIXELS:
        raise AeoptError(f"{what} declares {count:,} images ({n_others:,} of other sizes) of {first[0]}x{first[1]} "
                         f"pixels: over the limits ({MAX_IMAGES:,} images, {MAX_PIXELS:,} pixels) or inconsistent; "
                         "the file is damaged or hostile")
    others, last = {}, -1
    for _ in range(n_others):
        index = reader.varint("image index")
        if not last < index < count:
            raise AeoptError(f"{what} is damaged (image index {index} out of order or range)")
        size = reader.size()
        others[index], last = size, index
        pixels += size[0] * size[1]
        if pixels > MAX_PIXELS:
            raise AeoptError(f"{what} declares more than {MAX_PIXELS:,} pixels: the file is damaged or hostile")
    sizes = [others.get(i, first) for i in range(count)]
    bounds = slices(sizes) if version >= 3 else [(0, count)]
    lengths = [reader.varint("slice length") for _ in bounds[:-1]]
    if sum(lengths) > body_end - reader.pos:
        raise AeoptError(f"{what} is damaged (its slices claim {sum(lengths):,} bytes; "
                         f"{body_end - reader.pos:,} are left)")
    _check_work(sum(h * w for h, w in sizes), body_end - reader.pos, what)
    cuts = [reader.pos]
    for length in lengths:
        cuts.append(cuts[-1] + length)
    cuts.append(body_end)
    return bool(flags & FLAG_RGB), sizes, [(a, b, data[cuts[k]:cuts[k + 1]]) for k, (a, b) in enumerate(bounds)]


def _check_work(pixels: int, stream_bytes: int, what: str) -> None:
    if pixels > max(FREE_PIXELS, PIXELS_PER_BYTE * stream_bytes):
        raise AeoptError(f"{what} declares {pixels:,} pixels for a {stream_bytes:,}-byte stream, more than "
                         f"{PIXELS_PER_BYTE:,} pixels a byte: the file is damaged or hostile")
