"""Experiment tracking: TensorBoard and MLflow as callbacks of the one loop (`--tensorboard DIR`,
`--mlflow URI`).

Both are optional extras, imported only when asked for, so a plain install stays lean; a missing
package is one line naming the extra to install. A tracker only watches: it reads the loop's
events and the finished run directory and never changes what is trained, and a tracker that fails
mid-run (a server gone away) says so once and stops, while the run goes on. Only rank 0 of a
multi-process run tracks (train() builds trackers there only), as only rank 0 writes files.
Third-party warnings and INFO logs are silenced around every call into these libraries: they are
about the libraries, not the run, and would bury the progress bar.
"""
from __future__ import annotations

import importlib
import logging
import math
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

import torch

from ..errors import AeoptError, describe_failure
from ..settings import Settings
from .callbacks import Callback
from .loop import LOG_EVERY, Loop

IMAGES = 8  # validation samples shown as inputs over reconstructions: enough to judge, small enough to see
EXPERIMENT = "aeopt"  # MLflow experiment unless MLFLOW_EXPERIMENT_NAME names another, as MLflow's own tools do


@contextmanager
def quiet() -> Iterator[None]:
    """No warnings, and no INFO lines from mlflow/alembic, while a tracking library runs."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


@contextmanager
def unless_set(**values: str) -> Iterator[None]:
    """Environment variables set for a while, where the user has not set them."""
    added = [name for name in values if name not in os.environ]
    os.environ.update({name: values[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def require(module: str, extra: str) -> Any:
    """Import an optional package, or fail on one line with the extra that installs it."""
    try:
        with quiet():
            return importlib.import_module(module)
    except ImportError:
        raise AeoptError(f"--{extra} needs the {extra} package; pip install \"aeopt[{extra}]\"") from None


def numbers(values: dict[str, Any], prefix: str = "", depth: int = 1) -> dict[str, float]:
    """The numeric leaves of a dict, nested keys joined by `_`, down to `depth` levels below the top
    (metrics.json's `test.mse` -> `test_mse`; its per-class blocks are deeper and stay in the file)."""
    out: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and depth > 0:
            out.update(numbers(value, f"{name}_", depth - 1))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


class Tracker(Callback):
    """What both trackers share: failure handling, the epoch's samples/s, the end of the run.

    Subclasses implement `start`, `step`, `epoch`, `end` and `close`; the loop's events and train()'s
    `finish` reach them through `_safely`, so a tracking failure is one warning, never a lost run.
    """

    flag = ""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.broken, self.loop = log, False, None
        self.samples, self.seconds = 0, 0.0

    def _safely(self, action: Callable, *args) -> None:
        if self.broken:
            return
        try:
            with quiet():
                action(*args)
        except Exception as err:  # the run is worth more than its tracking
            self.broken = True
            self.log(f"warning: {self.flag} logging stopped ({describe_failure(err)}); training goes on and "
                     f"the run directory stays complete")

    def on_fit_start(self, loop: Loop) -> None:
        self.loop, self.seconds = loop, loop.train_seconds
        self._safely(self.start, loop)

    def on_step_end(self, loop: Loop, batch: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        self.samples += len(batch)
        if (loop.step + 1) % LOG_EVERY == 0:  # a host sync every LOG_EVERY steps, the loop's own rate of them
            self._safely(self.step, loop, parts)

    def on_epoch_end(self, loop: Loop, row: dict[str, float]) -> None:
        processes = loop.group.world_size if loop.group else 1
        rate = self.samples * processes / max(loop.train_seconds - self.seconds, 1e-9)
        self.samples, self.seconds = 0, loop.train_seconds
        self._safely(self.epoch, loop, {**row, "samples_per_second": rate})

    def finish(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        """After metrics.json and the report are written: the final figures and the directory."""
        self._safely(self.end, run_dir, metrics)

    def start(self, loop: Loop) -> None:
        """Before the first step (a resumed loop has its checkpoint's epoch, step and history)."""

    def step(self, loop: Loop, parts: dict[str, torch.Tensor]) -> None:
        """Every LOG_EVERY optimizer steps, with that step's detached loss parts."""

    def epoch(self, loop: Loop, row: dict[str, float]) -> None:
        """At each epoch's end: its history row, plus the epoch's samples_per_second."""

    def end(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        """After a run that finished: metrics.json's figures and the written run directory."""

    def close(self, status: str) -> None:
        """However the run ended: `status` is FINISHED, FAILED or KILLED (Ctrl-C), as MLflow names them."""


def reconstruction_grid(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Inputs (top row) over their reconstructions (bottom), CHW in [0, 1]. Both rows are scaled by the
    inputs' range, so standardized images show and an output off the data's range shows as clipped."""
    lo, hi = x.min(), x.max()
    rows = [((v - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1) for v in (x, x_hat)]
    if x.shape[1] not in (1, 3):  # TensorBoard shows grey or RGB: other channel counts show their first
        rows = [v[:, :1] for v in rows]
    return torch.cat([torch.cat(list(v), dim=2) for v in rows], dim=1)


class TensorBoardCallback(Tracker):
    """Event files for `tensorboard --logdir DIR`, one sub-folder per run (named as its run directory),
    so one DIR holds many runs side by side.

    Every scalar is at the optimizer step, so per-step and per-epoch curves share one axis:
    `step/<part>` and `step/lr` every LOG_EVERY steps (the step's loss and its parts); `epoch/<column>`
    for each column of history.csv (train and val loss and parts, lr, grad_norm), `grad/<layer>` as
    named there, `epoch/samples_per_second`; `test/<figure>` once at the end; and for image data the
    image `reconstructions`, the first IMAGES validation samples over their reconstructions, at each
    epoch. A resumed run drops what the old one logged after its checkpoint (TensorBoard's purge_step)
    and a fresh one what an overwritten run of the same name left, so the curves never double back.
    """

    flag = "tensorboard"

    def __init__(self, log_dir: str | Path, log: Callable[[str], None]):
        super().__init__(log)
        require("tensorboard", "tensorboard")
        with quiet():
            self.SummaryWriter = importlib.import_module("torch.utils.tensorboard").SummaryWriter
        self.log_dir, self.writer, self.images = Path(log_dir), None, None

    def start(self, loop: Loop) -> None:
        # steps up to the checkpoint's are kept, later ones (a killed run's, an overwritten run's) dropped
        self.writer = self.SummaryWriter(str(self.log_dir), purge_step=loop.step + 1)
        if loop.val_source is not None:
            x = next(iter(loop.val_source.in_order(IMAGES)), None)
            self.images = x if x is not None and x.dim() == 4 else None  # (N, C, H, W): images; tables have none

    def step(self, loop: Loop, parts: dict[str, torch.Tensor]) -> None:
        values = torch.stack([v.float().mean() for v in parts.values()]).tolist()  # one host sync
        for name, value in zip(parts, values):
            self.writer.add_scalar(f"step/{name}", value, loop.step + 1)
        self.writer.add_scalar("step/lr", loop.optimizer.param_groups[0]["lr"], loop.step + 1)

    def epoch(self, loop: Loop, row: dict[str, float]) -> None:
        for name, value in row.items():
            if name not in ("epoch", "train_seconds"):
                self.writer.add_scalar(name if "/" in name else f"epoch/{name}", value, loop.step)
        if self.images is not None:
            self.writer.add_image("reconstructions", self._reconstructions(loop), loop.step)
        self.writer.flush()  # an epoch is seen in TensorBoard when it ends, not minutes later

    def _reconstructions(self, loop: Loop) -> torch.Tensor:
        # the plain module in fp32: DDP's wrapper would start a collective that only this rank joins
        model = loop.model
        model.eval()
        with torch.no_grad():
            x_hat = model(self.images)["x_hat"].float()
        model.train()
        return reconstruction_grid(self.images.float(), x_hat).cpu()

    def end(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        for name, value in numbers(metrics.get("test", {}), "test/", depth=0).items():
            self.writer.add_scalar(name, value, self.loop.step)

    def close(self, status: str) -> None:
        if self.writer is not None:
            with quiet():
                self.writer.close()


def tracking_uri(uri: str) -> tuple[str, bool]:
    """(the URI MLflow is given, whether it is a local file store). A plain path becomes an absolute
    file: URI, so the store does not move with the working directory of a later run."""
    scheme = urlparse(uri).scheme
    if len(scheme) <= 1:  # no scheme (or a Windows drive letter): a folder
        return Path(uri).expanduser().resolve().as_uri(), True
    return uri, scheme == "file"


class MLflowCallback(Tracker):
    """One MLflow run per aeopt run (named as its run directory, tagged `aeopt.run_dir`) in experiment
    EXPERIMENT: the flat settings as params; each history.csv column (and epoch_samples_per_second) as
    a metric at step = epoch; metrics.json's figures (`test_mse`, `test_psnr`, `pca_mse`, ...) at the
    end, then the run directory as artifacts. A resumed run is a new MLflow run that first replays the
    epochs before its checkpoint, so each MLflow run holds a whole curve.

    The server is asked for the experiment before the run directory exists, so a wrong URI is bad
    input like any other: one line, nothing written, and soon (one retry, not MLflow's minutes of
    them: a server that does not answer the first question is a wrong URI, not a busy one).
    """

    flag = "mlflow"

    def __init__(self, uri: str, run_dir: Path, log: Callable[[str], None]):
        super().__init__(log)
        require("mlflow", "mlflow")
        self.uri, file_store = tracking_uri(uri)
        if file_store and "MLFLOW_ALLOW_FILE_STORE" not in os.environ:
            # MLflow 3 refuses its file store unless opted in; a user who names a folder has opted in
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
            log("note: MLflow's folder store gets no new features upstream; --mlflow sqlite:///mlflow.db is its "
                "maintained local store")
        self.run_dir, self.run_id, self.ended = run_dir, None, False
        try:
            with quiet(), unless_set(MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_TIMEOUT="10"):
                from mlflow.tracking import MlflowClient

                self.client = MlflowClient(tracking_uri=self.uri)
                name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
                found = self.client.get_experiment_by_name(name)
                self.experiment = found.experiment_id if found else self.client.create_experiment(name)
        except Exception as err:
            raise AeoptError(f"--mlflow {uri}: {describe_failure(err)}; give a reachable tracking URI "
                             f"(./mlruns, sqlite:///mlflow.db or http://HOST:5000)") from None

    def _log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(name, value, now, step) for name, value in metrics.items()]
        for i in range(0, len(batch), 500):  # MLflow takes at most 1000 metrics per call
            self.client.log_batch(self.run_id, metrics=batch[i:i + 500])

    def start(self, loop: Loop) -> None:
        from mlflow.entities import Param

        tags = {"aeopt.run_dir": str(self.run_dir.resolve())}
        if loop.epoch:
            tags["aeopt.resumed_at_epoch"] = str(loop.epoch)
        run = self.client.create_run(self.experiment, run_name=self.run_dir.name, tags=tags)
        self.run_id = run.info.run_id
        params = [Param(k, str(v)) for k, v in loop.settings.to_flat().items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        for row in loop.history:  # a resumed run: the epochs before its checkpoint
            self.epoch(loop, row)

    def epoch(self, loop: Loop, row: dict[str, float]) -> None:
        # the epoch's rate is named apart from metrics.json's samples_per_second (the whole run's), which
        # `end` logs at the same last step
        values = {("epoch_samples_per_second" if k == "samples_per_second" else k): v
                  for k, v in numbers(row, depth=0).items() if k != "epoch" and math.isfinite(v)}
        self._log(values, int(row["epoch"]))

    def end(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        self._log({k: v for k, v in numbers(metrics).items() if math.isfinite(v)}, self.loop.epoch)
        self.client.log_artifacts(self.run_id, str(run_dir))
        self.client.set_terminated(self.run_id, "FINISHED")
        self.ended = True

    def close(self, status: str) -> None:
        if self.run_id is not None and not self.ended:
            with quiet():
                try:
                    self.client.set_terminated(self.run_id, status)
                except Exception:  # the store is gone: the run's own error (if any) is the one to show
                    pass


class Tracking:
    """The trackers a run's settings ask for (`--tensorboard`, `--mlflow`), around the part of train()
    that trains and measures: `with tracking:` ends each tracker's run as finished, failed (an error)
    or killed (Ctrl-C), so no MLflow run is left "running" forever."""

    def __init__(self, trackers: list[Tracker] = ()):
        self.trackers = list(trackers)

    @classmethod
    def open(cls, settings: Settings, run_dir: Path, log: Callable[[str], None]) -> "Tracking":
        """Import the extras and reach the MLflow store now, before the run directory exists."""
        rt, trackers = settings.runtime, []
        if rt.tensorboard:
            trackers.append(TensorBoardCallback(Path(rt.tensorboard) / run_dir.name, log))
        if rt.mlflow:
            trackers.append(MLflowCallback(rt.mlflow, run_dir, log))
        return cls(trackers)

    def finish(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.finish(run_dir, metrics)

    def __enter__(self) -> "Tracking":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        status = ("FINISHED" if error is None else "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        for tracker in self.trackers:
            tracker.close(status)
