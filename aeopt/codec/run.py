"""A trained codec run ready to code (CodecRun) and how one is loaded (load_codec): its model, its
integer tables and their fingerprint, its coder, and where encoding's transforms run."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..errors import AeoptError
from ..models.codec.model import CodecModel
from . import coder, container
from .coder import Coder
from .tables import CodecTables, load_tables


@dataclass
class CodecRun:
    """A trained codec, ready to code: its model, its integer tables and their fingerprint."""

    path: Path
    model: CodecModel
    tables: CodecTables
    coder: Coder
    # where g_a and h_a run when encoding (load_codec(device=...)); everything after them (rounding,
    # the integer h_s, the coder) and all of decoding stay on the CPU, so a file encoded on a GPU
    # decodes exactly on any CPU: the GPU only changes which integers the encoder picks
    encode_device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _encoder: CodecModel | None = field(default=None, repr=False)

    def encoder(self) -> CodecModel:
        """The model the encoder's transforms run on: the run's own on the CPU, a copy elsewhere."""
        if self.encode_device.type == "cpu":
            return self.model
        if self._encoder is None:
            self._encoder = copy.deepcopy(self.model).to(self.encode_device).eval()
        return self._encoder

    @property
    def channels(self) -> int:
        return self.model.input_shape[0]

    def pack(self, sizes: list[tuple[int, int]], streams: "bytes | list[bytes]") -> bytes:
        return container.pack(sizes, streams, rgb=self.channels == 3, fingerprint=self.tables.fingerprint,
                              model_size=self.model.input_shape[1:])

    def unpack(self, data: bytes, what: str) -> tuple[list[tuple[int, int]], list[tuple[int, int, bytes]]]:
        """(image sizes, slices: (first image, end image, stream) each)."""
        rgb, sizes, slices = container.unpack(data, fingerprint=self.tables.fingerprint, what=what,
                                              model_size=self.model.input_shape[1:])
        if rgb != (self.channels == 3):
            raise AeoptError(f"{what} holds {'RGB' if rgb else 'grey'} images but the codec is "
                             f"{'RGB' if self.channels == 3 else 'grey'}; the file is damaged")
        return sizes, slices


def load_codec(run: "str | Path | CodecRun", *, device: str | None = None) -> CodecRun:
    """A codec run ready to code; `device` ("cpu" or "cuda"): where encoding's transforms run."""
    if device is not None:
        return replace(load_codec(run), encode_device=_encode_device(device), _encoder=None)
    if isinstance(run, CodecRun):
        return run
    from ..runs import load_torch

    coder.require_constriction()  # before any work: every use of a codec run entropy-codes

    loaded = load_torch(run)
    if not isinstance(loaded.model, CodecModel):
        raise AeoptError(f"{run} is a {loaded.config.model!r} run, not a codec; train one with "
                         "`aeopt train --model codec`")
    tables = load_tables(run, loaded.model)  # the fingerprint hashes the weights in NCHW order either way
    # Channels-last (with the sub-pixel g_s) ran g_s 1.3x-2.2x and the default g_a 2x faster on
    # 28x28 images (codec_kernels.md); the integers the decoder reads do not depend on it (y's
    # tables come from the integer h_s).
    loaded.model.to(memory_format=torch.channels_last)
    return CodecRun(Path(run), loaded.model, tables, Coder(tables))


def _encode_device(device: str) -> torch.device:
    if device not in ("cpu", "cuda"):
        raise AeoptError(f"unknown encoding device {device!r}; known: cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise AeoptError("--device cuda: no CUDA GPU is visible here (torch.cuda.is_available() is False); "
                         "encode on the CPU (--device cpu): the files decode the same either way")
    return torch.device(device)
