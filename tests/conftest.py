import pytest

from aeopt.data import load_data
from aeopt.train import OnEpochEnd


@pytest.fixture(scope="session")
def digits():
    """The built-in digits, loaded once for the whole session."""
    return load_data("digits", seed=0)


@pytest.fixture
def interrupt_after_epoch_2():
    """Callbacks for train() that kill the run (KeyboardInterrupt) at the end of epoch 2, before its checkpoint:
    the run directory then holds epoch 1's, and a resume replays epoch 2."""
    def hook(loop, row) -> None:
        if row["epoch"] == 2:
            raise KeyboardInterrupt
    return [OnEpochEnd(hook)]


@pytest.fixture(scope="session")
def codec_runs(tmp_path_factory):
    """Small codecs trained on digits, one per entropy model, once per session (~6 s each)."""
    import aeopt

    root = tmp_path_factory.mktemp("codec")
    runs = {}
    for entropy in ("factorized", "hyperprior", "meanscale", "channelwise"):
        aeopt.train(data="digits", model="codec", entropy=entropy, lmbda=0.05, latent_dim=8, width=16,
                    epochs=5, batch_size=16, lr=1e-2, threads=1, out=str(root / entropy), progress=False,
                    log=lambda message: None)
        runs[entropy] = root / entropy
    return runs
