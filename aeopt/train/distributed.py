"""Several processes, one run: PyTorch's own stack (torchrun + DistributedDataParallel), nothing home-made.

A process started by torchrun (RANK, WORLD_SIZE, LOCAL_RANK in its environment) joins the process
group: gloo on CPUs, nccl on GPUs (one GPU per process, cuda:LOCAL_RANK). Then:
- each rank draws its own share of every epoch's order (data/batches.py `shard`), so N processes at
  batch B take, step for step, the samples one process takes at batch N*B: the same run, with the
  gradients averaged by DDP. The learning rate is that of the global batch N*B; to keep the dynamics
  of a one-process run at batch B instead, scale --lr by N (the linear scaling rule);
- the main model's gradients are averaged by DDP during backward; an objective's extra optimizers (an
  AAE's discriminator, a codec's auxiliary loss) average theirs in a step pre-hook, so every rank's
  copy stays identical;
- validation figures are summed over the ranks before they are divided, so "best epoch" and early
  stopping are the same decision everywhere;
- only rank 0 writes the run directory; a checkpoint records the world size, and a resume with another
  refuses (the batch order depends on it);
- collectives time out after TIMEOUT_SECONDS, and torchrun ends the other ranks when one dies, naming
  the rank that failed, so a lost process ends the job instead of hanging it.
"""
from __future__ import annotations

import atexit
import datetime
import os
import sys
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..errors import AeoptError

TIMEOUT_SECONDS = int(os.environ.get("AEOPT_DDP_TIMEOUT", "300"))  # a lost peer ends a collective after this
EXIT_GRACE_SECONDS = 0.2  # see _release_workers_at_exit


@dataclass(frozen=True)
class Group:
    """This process's place in a multi-process run."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        """cuda:LOCAL_RANK for GPU runs (one GPU per process), else the CPU."""
        if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
            if not torch.cuda.is_available():
                raise AeoptError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum over all ranks."""
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        dist.barrier()


def from_environment(device: str = "auto") -> Group | None:
    """The process group torchrun set up for this process, joined once; None for a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    group = Group(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        gpu = torch.cuda.is_available() and device != "cpu"
        dist.init_process_group("nccl" if gpu else "gloo", timeout=datetime.timedelta(seconds=TIMEOUT_SECONDS))
        atexit.register(_release_workers_at_exit)
    return group


def _release_workers_at_exit() -> None:
    """Give gloo's worker threads the GIL once more before the interpreter finalizes.

    Why: a gloo worker frees a finished collective's tensors (a Python decref, so it takes the GIL)
    just after the caller's wait() has returned. When a script's last collective comes right before
    it exits, that can fall after finalization has begun; the thread is then exited inside a C++
    destructor and the process aborts ("terminate called without an active exception", SIGABRT):
    about 1 run in 12 of a 2-rank script under torchrun here, after all its work was done (gdb: a
    pt_gloo_runloop thread in ~AsyncAllgatherWork -> gil_scoped_acquire; pytorch/pytorch#190489; the
    upstream fix, #179291, was withdrawn). destroy_process_group alone does not wait for those
    threads, so it did not help (3 of 35); sleeping releases the GIL so they can finish. atexit
    handlers run before finalization starts, and once per process."""
    time.sleep(EXIT_GRACE_SECONDS)
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, main_parameters, device: torch.device) -> DistributedDataParallel:
    """DDP over the parameters the main optimizer updates; the rest (an extra optimizer's) are left to
    `average_gradients_before_step`, since the main loss does not reach them."""
    keep = {id(p) for p in main_parameters}
    ignored = [name for name, p in model.named_parameters() if id(p) not in keep]
    if ignored:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def average_gradients_before_step(optimizer: torch.optim.Optimizer, world_size: int) -> None:
    """Make `optimizer.step()` first average its parameters' gradients over the ranks."""
    def hook(optimizer, args, kwargs) -> None:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad.div_(world_size)

    optimizer.register_step_pre_hook(hook)


def launch(nproc: int, argv: list[str]) -> int:
    """`aeopt train --nproc-per-node N ...`: the same command under torch.distributed.run on this machine."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if nproc < 1:
        raise AeoptError(f"--nproc-per-node must be >= 1, got {nproc}")
    args = ["--standalone", "--nproc-per-node", str(nproc), "-m", "aeopt", *argv]
    # torchrun would set 1 thread per process and warn; give each its share of the cores instead
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    try:
        torchrun.main(args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()  # the one that failed first; torchrun then stopped the others
        code = failure.exitcode
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code} (its message is above)"
        print(f"aeopt: error: process rank {rank} of {nproc} {how}; the other processes were stopped",
              file=sys.stderr)
        return 2 if code == 2 else 1
    return 0


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
