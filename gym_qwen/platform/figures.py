"""Figures: a matplotlib figure written as a PNG in one atomic step, and the Pareto front that the comparison plots
draw and mark (the one definition of both)."""
from __future__ import annotations

import io
import os
from pathlib import Path

from .files import atomic_write_bytes


def write_png(fig, path: str | os.PathLike, dpi: int, close: bool = True) -> Path:
    """Render `fig` as a PNG in memory, then write it to `path` atomically (a reader never sees half a file);
    the figure is closed unless `close=False` (a caller that hands it back)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if close:
        import matplotlib.pyplot as plt  # matplotlib is loaded by whoever made the figure

        plt.close(fig)
    return atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, value) that no other point dominates (no other has cost <= and value >= with
    one of them strict), ordered by cost. Equal points are both on the front; a cost or value that is not a
    number never is."""
    ok = [i for i, (c, v) in enumerate(points) if c == c and v == v]
    front = [i for i in ok
             if not any(points[j][0] <= points[i][0] and points[j][1] >= points[i][1]
                        and (points[j][0] < points[i][0] or points[j][1] > points[i][1]) for j in ok if j != i)]
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))
