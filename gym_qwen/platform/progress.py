"""What a user watches: progress bars that turn themselves off when asked (tests, Ray workers) or when stderr is not
a terminal, and the plain text tables that commands print."""
from __future__ import annotations

import contextlib
import sys


class _Silent:
    n = 0

    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass

    def write(self, s, file=None):
        print(s, file=file if file is not None else sys.stdout, flush=True)


@contextlib.contextmanager
def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool = True, initial: int = 0):
    if not enabled:
        yield _Silent()
        return
    # tqdm is imported only where a progress bar is shown
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True, file=sys.stderr,
               mininterval=1.0, smoothing=0.05)
    try:
        yield bar
    finally:
        bar.close()


def table(rows: list[tuple], header: tuple) -> str:
    """A plain text table with aligned columns."""
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa
    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]])
