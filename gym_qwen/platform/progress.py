"""Progress bars that turn themselves off when asked (tests, Ray workers) or when stderr is not a terminal."""
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
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True, file=sys.stderr,
               mininterval=1.0, smoothing=0.05)
    try:
        yield bar
    finally:
        bar.close()
