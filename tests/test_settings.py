import argparse

import pytest
import yaml

import aeopt
from aeopt import AeoptError, Settings
from aeopt.cli import build_parser, main
from aeopt.settings import setting_fields


def _flags(command: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {opt for action in sub.choices[command]._actions for opt in action.option_strings}


@pytest.mark.parametrize("command", ["train", "lr-find"])
def test_every_setting_has_its_flag(command):
    flags = _flags(command)
    for _, field, _ in setting_fields():
        assert "--" + field.name.replace("_", "-") in flags, field.name


def test_settings_round_trip_through_flat_yaml_and_accept_nested_sections():
    settings = Settings.from_flat(model="mlp", hidden="32,16", lr=1e-3, noise="gaussian:0.1", threads=1).validate()
    again = Settings.from_flat(yaml.safe_load(yaml.safe_dump(settings.to_flat())))
    assert again == settings
    assert settings.optimization.lr == settings.lr == 1e-3 and settings.architecture.model == settings.model == "mlp"
    nested = Settings.from_flat({"architecture": {"model": "mlp"}, "optimization": {"epochs": 3}})
    assert nested.model == "mlp" and nested.epochs == 3
    with pytest.raises(AeoptError, match="unknown setting colour"):
        Settings.from_flat(colour="red")


def test_rules_live_in_the_library_not_the_cli(tmp_path):
    assert Settings.from_flat(patience=0).validate().patience is None  # 0 = off, in Python too
    with pytest.raises(AeoptError, match="--latent-dim must be >= 1"):
        Settings.from_flat(latent_dim=0).validate()
    run = aeopt.train(model="mlp", hidden="8", latent_dim=2, epochs=1, out=str(tmp_path / "run"), progress=False,
                      log=lambda m: None)
    with pytest.raises(AeoptError, match="only --epochs, --threads, --max-minutes may change") as from_python:
        aeopt.train(resume=run.path, lr=0.1, progress=False, log=lambda m: None)
    assert "drop --lr" in str(from_python.value)
    assert main(["train", "--resume", str(run.path), "--lr", "0.1", "--quiet"]) == 2
