"""The one loop with an objective of its own: parts logged, extra steps checkpointed, callbacks told."""
import json

import torch

from aeopt import Settings, fit
from aeopt.data import InMemorySource
from aeopt.models import create_model
from aeopt.models.objective import ExtraStep, Objective
from aeopt.train import Callback


class ScaledObjective(Objective):
    """MSE on a learned output scale, the scale trained by its own optimizer (an 'aux' step, as a codec's)."""

    spec = "scaled-mse"

    def __init__(self, model):
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.aux = torch.optim.SGD([self.scale], lr=0.01)

    def compute(self, forward, x_in, x):
        out = forward(x_in)
        mse = (out["x_hat"].float() * self.scale - x).square().mean()
        return {"loss": mse, "mse": mse.detach()}, out

    def extra_steps(self, model):
        def step(out, x):
            aux = (out["x_hat"].detach().float() * self.scale - x).square().mean()
            self.aux.zero_grad()
            aux.backward()
            self.aux.step()
            return {"aux": aux.detach()}
        return {"aux": ExtraStep(self.aux, step)}


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_fit_start(self, loop):
        self.events.append(("start", loop.epoch))

    def on_step_end(self, loop, batch, parts):
        self.events.append(("step", len(batch), sorted(parts)))

    def on_epoch_end(self, loop, row):
        self.events.append(("epoch", row["epoch"]))


def test_a_custom_objective_trains_logs_its_parts_and_resumes_its_extra_optimizer(tmp_path, digits):
    settings = Settings.from_flat(epochs=2, batch_size=256, precision="fp32", lr=3e-3)
    sources = (InMemorySource(digits.x_train, seed=0), InMemorySource(digits.x_val, seed=0))
    torch.manual_seed(0)
    model = create_model("conv", (1, 8, 8), 4, width=4)
    objective, recorder = ScaledObjective(model), Recorder()
    result = fit(model, objective, *sources, settings, run_dir=tmp_path, device="cpu", callbacks=[recorder],
                 log=lambda m: None, progress=False)
    steps_per_epoch = -(-len(digits.x_train) // 256)
    assert recorder.events[0] == ("start", 0)
    assert [e for e in recorder.events if e[0] == "epoch"] == [("epoch", 1), ("epoch", 2)]
    assert all(e[2] == ["aux", "loss", "mse"] for e in recorder.events if e[0] == "step")
    assert sum(e[0] == "step" for e in recorder.events) == 2 * steps_per_epoch
    row = result.history[-1]
    assert {"train_mse", "train_aux", "val_mse"} <= set(row) and row["train_mse"] > 0
    assert objective.scale.item() != 1.0  # the extra optimizer moved its parameter
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert "aux" in saved["state"]["extra_optimizers"] and saved["epoch"] == 2


def test_fit_without_a_run_directory_writes_nothing_and_keeps_the_best_weights(tmp_path, digits, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_flat(epochs=3, batch_size=128, precision="fp32", model="mlp", hidden="16")
    model = create_model("mlp", (1, 8, 8), 4, hidden="16")
    objective = model.objective(settings, in_unit_range=True, steps_per_epoch=10)
    result = fit(model, objective, InMemorySource(digits.x_train, seed=0), InMemorySource(digits.x_val, seed=0),
                 settings, device="cpu", log=lambda m: None, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert result.best_val == min(r["val_loss"] for r in result.history)


class FakeClock(Callback):
    """Each optimizer step takes `step_seconds` of fake time; from epoch `slow_from` on, `slow` times that."""

    def __init__(self, step_seconds: float, slow_from: int, slow: float):
        self.now, self.step_seconds, self.slow_from, self.slow = 0.0, step_seconds, slow_from, slow

    def __call__(self) -> float:
        return self.now

    def on_step_end(self, loop, batch, parts):
        self.now += self.step_seconds * (self.slow if loop.epoch + 1 >= self.slow_from else 1.0)


def test_a_time_capped_run_that_slows_down_still_ends_its_schedule(digits):
    """30 planned epochs, a deadline that holds them at the first speed, then the machine gets 3x slower from
    epoch 4: DeadlinePlan shortens the run so the cosine reaches its floor on the last step, instead of StopAt
    cutting the run mid-decay (what happened to the photo codec runs)."""
    from aeopt.train import DeadlinePlan, StopAt

    settings = Settings.from_flat(epochs=30, batch_size=256, precision="fp32", lr=3e-3, schedule="cosine",
                                  model="mlp", hidden="16", patience=None)
    steps = -(-len(digits.x_train) // 256)
    results = {}
    for planned in (False, True):
        clock = FakeClock(1.0, slow_from=4, slow=3.0)
        deadline = 30 * steps * 1.0
        stop = DeadlinePlan(deadline, 30, clock=clock) if planned else StopAt(deadline, clock=clock)  # a StopAt too
        callbacks = [clock, stop]
        torch.manual_seed(0)
        model = create_model("mlp", (1, 8, 8), 4, hidden="16")
        objective = model.objective(settings, in_unit_range=True, steps_per_epoch=steps)
        results[planned] = fit(model, objective, InMemorySource(digits.x_train, seed=0),
                               InMemorySource(digits.x_val, seed=0), settings, device="cpu", callbacks=callbacks,
                               log=lambda m: None, progress=False), clock.now
    (cut, cut_end), (fitted, fitted_end) = results[False], results[True]
    floor = 0.01 * 3e-3
    # time for 3 + 27 / 3 = 12 epochs: StopAt alone ends within epoch 13's first step, the rate far above its floor
    assert cut.history[-1]["lr"] > 50 * floor, [r["lr"] for r in cut.history]
    assert cut_end > deadline  # StopAt ended it after the step that crossed the deadline
    assert 11 <= len(fitted.history) <= 12 and fitted_end <= deadline
    assert fitted.history[-1]["lr"] < 1.2 * floor  # the cosine's last step: 1% of the rate


def test_max_minutes_plans_the_run_to_its_budget(digits):
    """--max-minutes: 2,000 epochs asked (some 30 s here), a 1.2 s budget; the run stops long before, with its planned
    epoch count (and the schedule's length) cut to the budget, not merely interrupted."""
    settings = Settings.from_flat(epochs=2000, max_minutes=0.02, batch_size=256, precision="fp32", lr=3e-3,
                                  model="mlp", hidden="16", patience=None, threads=1)
    steps = -(-len(digits.x_train) // 256)
    torch.manual_seed(0)
    model = create_model("mlp", (1, 8, 8), 4, hidden="16")
    result = fit(model, model.objective(settings, in_unit_range=True, steps_per_epoch=steps),
                 InMemorySource(digits.x_train, seed=0), InMemorySource(digits.x_val, seed=0), settings,
                 device="cpu", log=lambda m: None, progress=False)
    assert 3 <= len(result.history) < 1000
    assert result.loop.epochs < 1000 and result.loop.schedule.total_steps == result.loop.epochs * steps


def test_max_minutes_is_refused_with_several_processes_before_a_directory_exists(tmp_path, monkeypatch):
    import pytest

    from aeopt import train
    from aeopt.errors import AeoptError
    from aeopt.train import api

    monkeypatch.setattr(api.distributed, "from_environment", lambda device: object())
    with pytest.raises(AeoptError, match="--max-minutes is not available with several processes"):
        train(data="digits", epochs=2, max_minutes=1, out=str(tmp_path / "run"), progress=False, log=lambda m: None)
    assert not (tmp_path / "run").exists()
