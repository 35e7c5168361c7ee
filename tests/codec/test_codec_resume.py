"""A codec run killed mid-training resumes from its checkpoint and ends as the uninterrupted run ends."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import aeopt
from aeopt.cli import main
from aeopt.runs import load_tensors
from aeopt.train.callbacks import OnEpochEnd

CODEC = dict(model="codec", entropy="factorized", lmbda=0.05, latent_dim=8, width=8, epochs=3, batch_size=16,
             lr=1e-2, threads=1)


def _photo_folder(root):
    """Twelve small RGB images of a few sizes: the --patch path (random crops replayed by epoch)."""
    rng = np.random.default_rng(0)
    root.mkdir()
    for i in range(12):
        h, w = (20, 24) if i % 2 else (18, 30)
        smooth = np.cumsum(rng.integers(-9, 10, size=(h, w, 3)), axis=1)
        Image.fromarray(np.clip(128 + smooth, 0, 255).astype(np.uint8)).save(root / f"im{i:02d}.png")
    return f"images:{root}"


@pytest.mark.parametrize("patches", [False, True], ids=["digits", "image-folder-patches"])
def test_a_resumed_codec_run_equals_the_uninterrupted_one(tmp_path, interrupt_after_epoch_2, patches):
    data = dict(data=_photo_folder(tmp_path / "photos"), patch=8) if patches else dict(data="digits")
    quiet = dict(progress=False, log=lambda m: None)
    straight = aeopt.train(**CODEC, **data, out=str(tmp_path / "straight"), **quiet)
    with pytest.raises(KeyboardInterrupt):
        aeopt.train(**CODEC, **data, out=str(tmp_path / "cut"), callbacks=interrupt_after_epoch_2, **quiet)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    replayed = []  # the checkpoint holds epoch 1 (the cut came before epoch 2's): a resume runs epochs 2 and 3 only
    count = OnEpochEnd(lambda loop, row: replayed.append(row["epoch"]))
    resumed = aeopt.train(resume=tmp_path / "cut", callbacks=[count], **quiet)
    assert replayed == [2, 3]
    a = load_tensors(tmp_path / "straight" / "model.safetensors")
    b = load_tensors(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in straight.history]
    on_disk = json.loads((tmp_path / "cut" / "metrics.json").read_text())["test"]
    assert on_disk["bpp"] == straight.metrics["test"]["bpp"] and on_disk["psnr"] == straight.metrics["test"]["psnr"]
    assert (tmp_path / "cut" / "codec_tables.safetensors").is_file()


def test_resuming_a_codec_run_without_a_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    run = tmp_path / "empty"
    aeopt.train(**{**CODEC, "epochs": 1}, data="digits", out=str(run), progress=False, log=lambda m: None)
    for name in ("checkpoint.safetensors", "checkpoint.json"):
        (run / name).unlink()
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no checkpoint to resume from" in err and len(err.splitlines()) == 1
