"""Integer CDF tables: built once after training, stored in the run (codec_tables.safetensors).

The coder never evaluates a float density: encoder and decoder read the same integer counts
(PRECISION bits per table, every symbol >= 1, an escape symbol last), so the probabilities they
hand to constriction are identical on every machine. Table rows:
- factorized y and the hyperprior's z: one row per channel, symbols low[c] .. low[c] + n[c] - 1;
- the hyperprior's y: one row per entry of the fixed scale table, symbols -L .. L;
- the mean-scale hyperprior's y: one row per (scale, mean phase): the Gaussian centred at the
  phase's fraction (j + 1/2) / MEAN_PHASES, symbols -L .. L + 1 counted from the mean's integer
  part (the coder subtracts it). The mean is quantized to 1/MEAN_PHASES so that the row choice
  stays integer arithmetic: 8 phases put a mean at most 1/16 from its table's centre;
- on the mean grid (latent_grid="mean"), the scale-only rows again: the coder codes y_hat minus the
  mean's bin centre, an integer centred on zero (and the tables are 64 rows, not 512).
Values outside a row's range are coded as the escape symbol followed by the value (coder.py).
The hyperprior's h_s, in integers (intnet.py), selects the row per element; for the channel-wise
model the context nets (also integer) correct it slice by slice.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import AeoptError
from ..models.codec.entropy import GaussianConditional, scale_table
from ..models.codec.model import MEAN_PHASES, CodecModel
from ..runs import load_tensors, save_tensors
from . import intnet

PRECISION = 16  # bits per table: 1/65536 is the smallest probability, far below the 1e-9 tails' cost
TABLES_FILE = "codec_tables.safetensors"


@dataclass
class Table:
    """A set of rows: row r codes symbols low[r] .. low[r] + n[r] - 1, then the escape (index n[r])."""

    low: np.ndarray     # (R,) int64
    n: np.ndarray       # (R,) int64, symbols per row before the escape
    counts: np.ndarray  # (R, max n + 1) int64, zero-padded; row r sums to 2**PRECISION over n[r] + 1 entries

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.low": torch.from_numpy(self.low), f"{prefix}.n": torch.from_numpy(self.n),
                f"{prefix}.counts": torch.from_numpy(self.counts)}

    def stored(self, prefix: str) -> dict[str, torch.Tensor]:
        """As written to tables.safetensors: only each row's n + 1 counts, end to end, in int32 (a count is
        at most 2**PRECISION). The padded int64 rectangle was 87% zeros: 13 MB for a mean-scale model's
        512 rows, now 0.9 MB. The fingerprint still hashes tensors(), so files coded before decode."""
        rows = np.concatenate([self.counts[r, :self.n[r] + 1] for r in range(len(self.n))])
        return {f"{prefix}.low": torch.from_numpy(self.low), f"{prefix}.n": torch.from_numpy(self.n),
                f"{prefix}.rows": torch.from_numpy(rows.astype(np.int32)),
                f"{prefix}.width": torch.tensor([self.counts.shape[1]])}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], prefix: str) -> "Table":
        low, n = (t[f"{prefix}.{k}"].numpy().astype(np.int64) for k in ("low", "n"))
        if f"{prefix}.counts" in t:  # the padded rectangle (tables written before the ragged rows)
            return cls(low, n, t[f"{prefix}.counts"].numpy().astype(np.int64))
        rows, width = t[f"{prefix}.rows"].numpy().astype(np.int64), int(t[f"{prefix}.width"][0])
        if (len(rows) != int((n + 1).sum()) or len(low) != len(n) or n.min(initial=0) < 0
                or n.max(initial=0) >= width or width > (1 << PRECISION) + 1):  # each count >= 1: no wider row
            raise AeoptError(f"the {prefix} table's rows do not match its sizes; rebuild it by retraining the run")
        counts = np.zeros((len(n), width), dtype=np.int64)
        ends = np.cumsum(n + 1)
        for r, end in enumerate(ends):
            counts[r, :n[r] + 1] = rows[end - n[r] - 1:end]
        return cls(low, n, counts)


def integer_counts(pmf: np.ndarray) -> np.ndarray:
    """pmf (n,) float64 (sum <= 1) -> n + 1 integer counts (the last = escape), each >= 1, sum 2**PRECISION."""
    total = 1 << PRECISION
    escape = max(0.0, 1.0 - float(pmf.sum()))
    p = np.append(np.clip(pmf, 0, None), escape)
    counts = np.floor(p * (total - len(p))).astype(np.int64) + 1
    counts[np.argmax(counts)] += total - counts.sum()
    if counts.min() < 1:
        raise AeoptError("a CDF table cannot be built (a density is degenerate); train the codec longer")
    return counts


def table_from_pmf(low: torch.Tensor, pmf: torch.Tensor) -> Table:
    pmf = pmf.numpy()
    n = (pmf > 0).cumsum(1).argmax(1) + 1  # last nonzero entry + 1 (pmf is zero-padded at the end)
    counts = np.zeros((len(pmf), pmf.shape[1] + 1), dtype=np.int64)
    for r in range(len(pmf)):
        counts[r, :n[r] + 1] = integer_counts(pmf[r, :n[r]])
    return Table(low.numpy().astype(np.int64), n.astype(np.int64), counts)


@dataclass
class CodecTables:
    y: Table
    z: Table | None
    hyper: intnet.IntNet | None
    fingerprint: bytes  # sha256 of the weights and the tables: a file names the model it needs
    contexts: list[intnet.IntNet] = field(default_factory=list)  # channel-wise: slice s's net is contexts[s - 1]

    @property
    def short_id(self) -> str:
        return self.fingerprint[:2].hex()  # the id a file header carries (container.py)


def build_tables(model: CodecModel) -> CodecTables:
    """Tables for a trained model (float64 densities -> integer counts; h_s -> fixed point)."""
    model = model.cpu().eval()
    contexts = []
    if model.has_means:
        grid = model.on_mean_grid
        pmf = GaussianConditional.pmf_table(scale_table()) if grid else \
            GaussianConditional.shifted_pmf_table(scale_table(), MEAN_PHASES)
        y = table_from_pmf(*pmf)
        z = table_from_pmf(*model.z_density.pmf_table())
        hyper = intnet.IntNet.from_module(model.hyper_decoder, scale_table(), MEAN_PHASES, grid)
        contexts = [intnet.IntNet.from_module(net, scale_table(), MEAN_PHASES, grid)
                    for net in getattr(model, "contexts", [])]
    elif model.entropy == "hyperprior":
        y = table_from_pmf(*GaussianConditional.pmf_table(scale_table()))
        z = table_from_pmf(*model.z_density.pmf_table())
        hyper = intnet.IntNet.from_module(model.hyper_decoder, scale_table())
    else:
        y, z, hyper = table_from_pmf(*model.y_density.pmf_table()), None, None
    return CodecTables(y, z, hyper, fingerprint(model.state_dict(), _table_tensors(y, z, hyper, contexts)), contexts)


def _table_tensors(y: Table, z: Table | None, hyper, contexts=(), *, stored: bool = False) -> dict[str, torch.Tensor]:
    """What the fingerprint hashes, or (`stored`) what the file holds: the same but for the tables' form."""
    tensors = y.stored("y") if stored else y.tensors("y")
    if z is not None:
        tensors.update(z.stored("z") if stored else z.tensors("z"))
        tensors.update(hyper.tensors("hs"))
    for s, net in enumerate(contexts, start=1):
        tensors.update(net.tensors(f"cc{s}"))
    return tensors


def fingerprint(state: dict[str, torch.Tensor], tables: dict[str, torch.Tensor]) -> bytes:
    h = hashlib.sha256()
    for name, group in (("model", state), ("tables", tables)):
        for key in sorted(group):
            t = group[key].detach().cpu().contiguous()
            h.update(f"{name}/{key}/{t.dtype}/{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()


def save_tables(run_dir: str | Path, tables: CodecTables) -> None:
    save_tensors(Path(run_dir) / TABLES_FILE, _table_tensors(tables.y, tables.z, tables.hyper, tables.contexts,
                                                             stored=True),
                 metadata={"precision": str(PRECISION), "fingerprint": tables.fingerprint.hex()})


def load_tables(run_dir: str | Path, model: CodecModel) -> CodecTables:
    """The run's stored tables; their fingerprint is recomputed, so edited weights or tables are caught."""
    path = Path(run_dir) / TABLES_FILE
    if not path.is_file():
        raise AeoptError(f"{run_dir} has no {TABLES_FILE}: it is not a trained codec run "
                         f"(train one with `aeopt train --model codec`)")
    t = load_tensors(path)
    try:
        y = Table.from_tensors(t, "y")
        z = Table.from_tensors(t, "z") if "z.low" in t else None
        hyper = intnet.IntNet.from_tensors(t, "hs") if z is not None else None
        contexts = [intnet.IntNet.from_tensors(t, f"cc{s}") for s in range(1, 1 + len(getattr(model, "contexts", [])))]
    except KeyError as err:
        raise AeoptError(f"{path} is incomplete (no {err}); rebuild it by retraining the run") from None
    if (z is None) != (model.entropy == "factorized") or (hyper is not None and (
            (hyper.phases > 0) != model.has_means or hyper.grid != model.on_mean_grid)):
        raise AeoptError(f"{path} does not match the run's {model.entropy} model; the run directory is inconsistent")
    return CodecTables(y, z, hyper, fingerprint(model.state_dict(), _table_tensors(y, z, hyper, contexts)), contexts)
