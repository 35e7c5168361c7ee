"""CSV tables: numbers per row, an optional header row, an optional label column.

A reader as those in readers.py: raw numpy arrays back, or an AeoptError naming the line and the fix.
"""
from __future__ import annotations

import csv
from array import array

import numpy as np

from ..errors import AeoptError
from .readers import require_file

LABEL_COLUMNS = ("label", "class", "y")  # a column of these names (any case) holds labels, not features


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def load_csv(path: str, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a numeric CSV table with an optional header row and label column.

    Each row becomes numbers as it is read, so memory is that of the float64 table (8 bytes a cell), not
    of the Python strings of every cell (about 60 bytes each): a large table never costs 8x its size.
    """
    file = require_file(path)
    values, raw_labels, header, cols, label_col, rows = array("d"), [], None, [], None, 0
    try:
        with open(file, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for cells in reader:
                row = [c.strip() for c in cells]
                if not any(row):
                    continue
                line = reader.line_num
                if header is None:
                    header, is_data = row, all(map(_is_number, row))
                    if is_data:  # no header row: every row is data
                        header = [f"column {i + 1}" for i in range(len(row))]
                    names = [h.lower() for h in header]
                    label_col = next((names.index(n) for n in LABEL_COLUMNS if n in names), None)
                    cols = [i for i in range(len(header)) if i != label_col]
                    if not is_data:
                        continue
                if not cols:
                    raise AeoptError(f"{where}: no feature columns besides the label: add numeric columns")
                if len(row) != len(header):
                    raise AeoptError(f"{where}: line {line} has {len(row)} cells but the header has {len(header)}: "
                                     "give every row the same number of cells")
                try:
                    numbers = [float(row[i]) for i in cols]
                except ValueError:
                    i = next(i for i in cols if not _is_number(row[i]))
                    raise AeoptError(f"{where}: non-numeric value {row[i]!r} in column {header[i]!r} at line "
                                     f"{line}: make the column numeric (class names belong in a 'label' column)"
                                     ) from None
                if label_col is not None and not row[label_col]:
                    raise AeoptError(f"{where}: empty {header[label_col]!r} at line {line}: give every row a label")
                values.extend(numbers)
                if label_col is not None:
                    raw_labels.append(row[label_col])
                rows += 1
    except (UnicodeDecodeError, csv.Error) as e:
        raise AeoptError(f"{where}: not a readable CSV text file ({e}): save it as UTF-8 CSV") from None
    if header is None:
        raise AeoptError(f"{where}: the table is empty: write a header row and one row per sample")
    if not rows:
        raise AeoptError(f"{where}: the table is empty (only a header): add one row per sample")
    x = np.frombuffer(values, dtype=np.float64).reshape(rows, len(cols))
    if label_col is None:
        return x, None
    numeric = all(map(_is_number, raw_labels))
    return x, (np.array([float(v) for v in raw_labels]) if numeric else np.array(raw_labels))
