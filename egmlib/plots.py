"""Figure helpers with one house style. Figures are saved atomically (see :mod:`egmlib.runs`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt

from .runs import atomic_path

__all__ = ["RHYTHM_COLORS", "savefig", "use_style"]

#: One colour per rhythm, used by every figure.
RHYTHM_COLORS = {"SR": "#1f77b4", "AF": "#d62728"}

_STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "savefig.bbox": "tight",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "legend.frameon": False,
    "image.cmap": "viridis",
}


def use_style() -> None:
    """Apply the house style to matplotlib's global settings."""
    mpl.rcParams.update(_STYLE)


def savefig(fig: plt.Figure, name: str, folder: str | Path) -> Path:
    """Save ``fig`` as ``folder/name`` (PNG unless ``name`` has another suffix), atomically.

    PNG metadata that changes between runs (software version) is left out, so a figure that did
    not change produces the same bytes.
    """
    path = Path(folder) / (name if Path(name).suffix else f"{name}.png")
    with atomic_path(path) as tmp:
        meta = {"Software": None} if path.suffix == ".png" else None
        fig.savefig(tmp, metadata=meta)
    return path
