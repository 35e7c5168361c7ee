"""Checkpoints: everything a run needs to continue exactly, as safetensors + JSON (never pickle).

`checkpoint.safetensors` holds the model's and every optimizer's tensors (the main one and each of
the objective's extra steps) and, in its metadata, the rest (epoch, step, schedule, best so far,
history): one file, written atomically after every epoch, so a kill between two writes cannot pair
one epoch's weights with another's counters. `checkpoint.json` is the same record for people and
for runs written before the record moved into the tensors file.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import AeoptError
from ..runs import (atomic_write_text, flatten_state, json_safe, load_tensors_and_metadata, save_tensors, unflatten_state,
                    write_json)
from .optim import match_param_layout, plain_lr

if TYPE_CHECKING:
    from .loop import Loop


def save_checkpoint(loop: "Loop") -> None:
    tensors, skeleton = flatten_state({
        "model": loop.model.state_dict(), "optimizer": plain_lr(loop.optimizer.state_dict()),
        "extra_optimizers": {name: extra.optimizer.state_dict() for name, extra in loop.extra_steps.items()}})
    record = {
        "state": skeleton, "epoch": loop.epoch, "step": loop.step, "train_seconds": loop.train_seconds,
        "best_val": loop.best_val, "best_epoch": loop.best_epoch, "schedule": loop.schedule.state(),
        "history": loop.history, "world_size": getattr(loop.train_source, "world_size", 1)}
    save_tensors(loop.run_dir / "checkpoint.safetensors", tensors, metadata={RECORD_KEY: json.dumps(json_safe(record))})
    write_json(loop.run_dir / "checkpoint.json", record)


RECORD_KEY = "aeopt_checkpoint"


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / "checkpoint.safetensors").is_file() or (run_dir / "checkpoint.json").is_file()


def load_checkpoint(loop: "Loop") -> None:
    if not has_checkpoint(loop.run_dir):
        raise AeoptError(f"{loop.run_dir} has no checkpoint to resume from; start a new run instead")
    tensors, metadata = load_tensors_and_metadata(loop.run_dir / "checkpoint.safetensors")
    meta_path = loop.run_dir / "checkpoint.json"
    try:
        meta = json.loads(metadata[RECORD_KEY] if RECORD_KEY in metadata else meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise AeoptError(f"{meta_path} is damaged ({err}); start a new run instead") from None
    saved, now = meta.get("world_size", 1), getattr(loop.train_source, "world_size", 1)
    if saved != now:
        launch = "without --nproc-per-node" if saved == 1 else f"with --nproc-per-node {saved} (or torchrun)"
        raise AeoptError(f"{loop.run_dir} was trained by {saved} process(es) and this resume has {now}: each "
                         f"process's batch order depends on that number, so the run could not continue exactly; "
                         f"resume it {launch}, or start a new run from its weights")
    state = unflatten_state(meta["state"], tensors)
    loop.model.load_state_dict(state["model"])
    loop.optimizer.load_state_dict(state["optimizer"])
    match_param_layout(loop.optimizer)
    for name, extra in loop.extra_steps.items():
        extra.optimizer.load_state_dict(state["extra_optimizers"][name])
        match_param_layout(extra.optimizer)
    loop.epoch, loop.step, loop.train_seconds = meta["epoch"], meta["step"], meta["train_seconds"]
    loop.best_val = math.inf if meta["best_val"] is None else meta["best_val"]
    loop.best_epoch, loop.history = meta["best_epoch"], meta["history"]
    loop.schedule.load_state({k: (math.inf if v is None else v) for k, v in meta["schedule"].items()})


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    columns = list(dict.fromkeys(k for row in history for k in row))
    lines = [",".join(columns)] + [",".join(f"{row.get(c, '')}" for c in columns) for row in history]
    atomic_write_text(path, "\n".join(lines) + "\n")
