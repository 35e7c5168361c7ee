"""Small promises of every run: files a team can share, a warning for a pointless latent, complete metrics."""
import os
import stat

import aeopt


def test_run_files_honour_the_umask_like_open_does(tmp_path):
    old = os.umask(0o002)
    try:
        run = aeopt.train(model="mlp", hidden="8", latent_dim=2, epochs=1, out=str(tmp_path / "run"), progress=False,
                          log=lambda m: None)
    finally:
        os.umask(old)
    for name in ("config.yaml", "model.safetensors", "metrics.json", "checkpoint.json", "history.csv"):
        mode = stat.S_IMODE((run.path / name).stat().st_mode)
        assert mode == 0o664, (name, oct(mode))  # group may read and write, as with open() under umask 002


def test_a_latent_as_large_as_the_input_gets_a_warning_that_says_why(tmp_path):
    said = []
    aeopt.train(model="mlp", hidden="8", latent_dim=64, epochs=1, out=str(tmp_path / "run"), progress=False,
                log=said.append)
    warning = [m for m in said if m.startswith("warning: --latent-dim 64")]
    assert warning and "can copy the input" in warning[0] and "below 64" in warning[0]
    said.clear()
    aeopt.train(model="mlp", hidden="8", latent_dim=8, epochs=1, out=str(tmp_path / "ok"), progress=False,
                log=said.append)
    assert not [m for m in said if "latent" in m]
