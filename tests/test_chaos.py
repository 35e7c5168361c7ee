"""The short version of benchmarks/chaos.py: commands killed at random moments (SIGKILL, and Ctrl-C)
recover by following their own messages, leave no unreadable file, reach the uninterrupted result and
lose no finished trial. The long run (>= 20 kills per command) is the committed table
benchmarks/results/chaos.md."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks/
from benchmarks import chaos, chaos_files  # noqa: E402


@pytest.mark.parametrize("name,kills,sigints", [("train", 1, 1), ("optimize", 1, 0), ("codec train", 1, 1)])
def test_killed_commands_recover_with_every_file_whole(name, kills, sigints, tmp_path, monkeypatch):
    monkeypatch.setattr(chaos, "TRAIN_EPOCHS", 12)
    tally, window = chaos.run_command(name, tmp_path / "work", kills, sigints, seed=1, log=lambda m: None)
    assert window > 0
    assert tally.kills == kills and tally.sigints == sigints, tally
    assert tally.problems == []
    assert tally.files_checked > 0 and tally.corrupt_after_kill == 0 and tally.corrupt_after_recovery == 0
    assert tally.recovered == kills + sigints and tally.differs == 0 and tally.lost_trials == 0
    assert tally.sigint_clean == sigints


def test_a_damaged_file_is_found(tmp_path):
    """The checker itself can fail: a truncated JSON, safetensors and PNG are each reported."""
    import json

    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    (tmp_path / "m.json").write_text(json.dumps({"a": 1})[:-2])
    save_file({"w": torch.ones(100)}, tmp_path / "w.safetensors")
    (tmp_path / "w.safetensors").write_bytes((tmp_path / "w.safetensors").read_bytes()[:-50])
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "i.png")
    (tmp_path / "i.png").write_bytes((tmp_path / "i.png").read_bytes()[:30])
    (tmp_path / "ok.yaml").write_text("a: 1\n")
    (tmp_path / ".x.json.123.tmp").write_text("{")
    found = chaos_files.check_files(tmp_path)
    assert found.files == 4 and found.leftovers == 1
    assert sorted(c.split(":")[0] for c in found.corrupt) == ["i.png", "m.json", "w.safetensors"]
