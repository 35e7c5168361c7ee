"""Data: built-in sets and file readers (readers.py), splits and scaling (datasets.py), and the batch
sources the training loop draws from (batches.py)."""
from .batches import BatchSource, InMemorySource, MmapSource, epoch_order
from .datasets import KNOWN_SOURCES, Dataset, MappedSplit, load_array_file, load_data, standardize

__all__ = ["BatchSource", "Dataset", "InMemorySource", "KNOWN_SOURCES", "MappedSplit", "MmapSource", "epoch_order",
           "load_array_file", "load_data", "standardize"]
