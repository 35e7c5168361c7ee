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
