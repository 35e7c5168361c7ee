"""Figures as PNG bytes (written atomically by the caller); matplotlib is imported only when drawing."""
from __future__ import annotations

import io


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed), imported on first use:
    importing it costs about a second, which a run that draws nothing should not pay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_bytes(fig, *, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()
