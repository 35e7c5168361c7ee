"""The whole training step as one CUDA graph: forward, loss, backward and the optimizer update.

At batch 256 the models this library trains run a GPU step in a few milliseconds, most of which is
Python and kernel launches (benchmarks/results/train_speed_cuda.md). A CUDA graph records the step's kernels once
and replays them with one launch. What that needs, and how it is met here:
- static tensors: the batch is copied into one fixed input buffer; the loss, outputs and gradients
  live in the graph's memory and are overwritten by every replay;
- a learning rate the graph reads from device memory: each parameter group's lr becomes a 0-d
  tensor that the schedule fills in place (`optim.set_lr`), and the optimizer is made capturable;
- warm-up before capture: the first WARMUP_STEPS steps run eagerly on a side stream (they are real
  training steps), so the optimizer state exists and cuDNN has chosen its kernels;
- batches of another size (the epoch's last one) run eagerly, into the same gradient tensors.
Only the plain step is captured: fp16 (the grad scaler syncs with the host), --compile, SGD and RMSprop
(no capturable fused update here) and variants (extra optimizers, batch transforms, per-step loss parts)
stay eager. If capture fails the
run says so once and continues eagerly.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from ..errors import describe_failure

if TYPE_CHECKING:
    from .loop import Loop as Trainer

WARMUP_STEPS = 3


def graph_reason(trainer: "Trainer") -> str | None:
    """Why this run's step cannot be captured, or None if it can."""
    if trainer.device.type != "cuda":
        return "not on a CUDA device"
    if not trainer.config.cuda_graph:
        return "--no-cuda-graph"
    if trainer.precision == "fp16":
        return "fp16 needs the grad scaler, which syncs with the host"
    if trainer.config.compile:
        return "--compile"
    if trainer.config.optimizer not in ("adam", "adamw"):
        return "only Adam and AdamW have a capturable (fused) update here"
    if getattr(trainer, "group", None) is not None:
        return "several processes (DDP): its gradient all-reduce is not captured here"
    if trainer.extra_steps:
        return "the objective runs extra optimizer steps on every step's outputs"
    return trainer.objective.graph_reason


class GraphedStep:
    """Replays a captured training step for full batches; anything else runs `eager_step`."""

    def __init__(self, trainer: "Trainer", body: Callable[[torch.Tensor], torch.Tensor],
                 eager_step: Callable[..., torch.Tensor]):
        self.trainer, self.body, self.eager_step = trainer, body, eager_step
        self.batch_size = trainer.config.batch_size
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed = False
        self.warm = 0
        self.static_x: torch.Tensor | None = None
        self.static_parts: dict[str, torch.Tensor] | None = None
        self.grads: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        for group in trainer.optimizer.param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), device=trainer.device)
            group["capturable"] = True

    def __call__(self, x: torch.Tensor, *, sample_grads: bool = False) -> dict[str, torch.Tensor]:
        if self.failed or len(x) != self.batch_size:
            return self._eager(x, sample_grads)
        if self.graph is None:
            if self.warm < WARMUP_STEPS:
                self.warm += 1
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    loss = self._eager(x, sample_grads)
                torch.cuda.current_stream().wait_stream(side)
                return loss
            if not self._capture(x):
                return self._eager(x, sample_grads)
        self.static_x.copy_(x)
        self.graph.replay()
        if sample_grads:  # the gradients of this step are in the graph's tensors until the next replay
            self.trainer.grad_monitor.sample()
        return dict(self.static_parts)

    def _eager(self, x: torch.Tensor, sample_grads: bool) -> dict[str, torch.Tensor]:
        loss = self.eager_step(x, sample_grads=sample_grads)
        for param, grad in self.grads:  # the graph keeps writing its own gradient tensors: point back at them
            param.grad = grad
        return loss

    def _capture(self, x: torch.Tensor) -> bool:
        optimizer = self.trainer.optimizer
        try:
            self.static_x = x.clone()
            optimizer.zero_grad(set_to_none=True)  # the graph allocates (and owns) the gradients
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.static_parts = self.body(self.static_x)
                optimizer.step()
        except Exception as err:  # capture raises many kinds of errors; any of them means eager
            self.trainer.log(f"warning: CUDA graph capture failed ({describe_failure(err)}); "
                             "training in eager mode (--no-cuda-graph skips the attempt)")
            self.failed = True
            optimizer.zero_grad(set_to_none=True)
            return False
        self.graph = graph
        self.grads = [(p, p.grad) for group in optimizer.param_groups for p in group["params"]
                      if p.grad is not None]
        return True
