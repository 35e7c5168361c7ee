import pytest

from aeopt.data import load_data


@pytest.fixture(scope="session")
def digits():
    """The built-in digits, loaded once for the whole session."""
    return load_data("digits", seed=0)


@pytest.fixture
def interrupt_after_epoch_2():
    """A `setup` for train() that kills the run (KeyboardInterrupt) right after epoch 2's checkpoint."""
    def install(trainer) -> None:
        def hook(trainer, row) -> None:
            if row["epoch"] == 2:
                raise KeyboardInterrupt
        trainer.epoch_hooks.append(hook)
    return install
