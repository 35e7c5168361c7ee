"""What a search minimizes: one reconstruction error and one or two costs, all measured per model.

Costs come from the built model before any training (params, training FLOPs per sample counted
by torch's flop counter, measured inference latency), so they are exact and cheap.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from ..errors import AeoptError

ERRORS = {"mse": "validation mean squared error", "mae": "validation mean absolute error"}
COSTS = {"params": "parameters", "flops": "training FLOPs per sample (forward + backward)",
         "latency": "measured CPU inference latency per sample (microseconds, batch 64)"}
COST_KEYS = {"params": "params", "flops": "train_flops_per_sample", "latency": "latency_us"}
ALIASES = {"train_flops_per_sample": "flops", "train_flops": "flops", "latency_us": "latency"}


@dataclass(frozen=True)
class Objectives:
    """The error to minimize and the costs to trade it against (all minimized)."""

    error: str
    costs: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return (self.error, *self.costs)

    @property
    def cost_keys(self) -> tuple[str, ...]:
        return tuple(COST_KEYS[c] for c in self.costs)


def parse_objectives(spec: str | list[str] | tuple[str, ...]) -> Objectives:
    """'mse,params' -> Objectives; exactly one error and one or two costs."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    names = [ALIASES.get(n, n) for n in names if n]
    unknown = [n for n in names if n not in ERRORS and n not in COSTS]
    if unknown:
        raise AeoptError(f"unknown objective {unknown[0]!r}; errors: {', '.join(ERRORS)}; costs: {', '.join(COSTS)} "
                         "(e.g. --objectives mse,params)")
    errors = [n for n in names if n in ERRORS]
    costs = [n for n in names if n in COSTS]
    if len(errors) != 1 or not 1 <= len(costs) <= 2 or len(set(costs)) != len(costs):
        raise AeoptError(f"--objectives needs one error ({', '.join(ERRORS)}) and one or two different costs "
                         f"({', '.join(COSTS)}), got {','.join(names) or 'nothing'}; "
                         "e.g. mse,params or mse,flops,latency")
    return Objectives(errors[0], tuple(costs))


def measure_latency_us(model: torch.nn.Module, input_shape: tuple[int, ...], *, batch: int = 64,
                       repeats: int = 5) -> float:
    """Median wall time of an eval forward pass on the CPU, per sample, in microseconds."""
    import copy

    probe = copy.deepcopy(model).float().cpu().eval()
    x = torch.rand(batch, *input_shape)
    times = []
    with torch.no_grad():
        probe(x)  # warm-up: first calls allocate
        for _ in range(repeats):
            started = time.perf_counter()
            probe(x)
            times.append(time.perf_counter() - started)
    return statistics.median(times) / batch * 1e6


def model_costs(model: torch.nn.Module, objectives: Objectives) -> dict[str, float]:
    """params and training FLOPs per sample always; latency when it is an objective (it takes time)."""
    costs = {"params": model.num_params(), "train_flops_per_sample": model.train_flops_per_sample()}
    if "latency" in objectives.costs:
        costs["latency_us"] = measure_latency_us(model, model.input_shape)
    return costs


def reconstruction_error(name: str, x_hat: torch.Tensor, x: torch.Tensor) -> float:
    """The chosen error of reconstructions x_hat of x (both in data space)."""
    diff = x_hat.float() - x.float()
    return float(diff.square().mean() if name == "mse" else diff.abs().mean())
