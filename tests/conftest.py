import pytest

from aeopt.data import load_data


@pytest.fixture(scope="session")
def digits():
    """The built-in digits, loaded once for the whole session."""
    return load_data("digits", seed=0)
