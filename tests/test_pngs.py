"""The plot checker (tests/pngs.py) itself: it passes a plot that shows its data and fails a blank one, one of
another size, one without the data's colour, one with a colour it should not have, and a file that is no PNG."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pngs import assert_plot, colour_pixels, read_png  # noqa: E402


def _figure(path, draw: bool) -> None:
    fig, ax = plt.subplots(figsize=(4, 3))
    if draw:
        ax.plot([0, 1, 2], [1, 3, 2], marker="s", ms=8, color="tab:purple")
    fig.savefig(path, format="png", dpi=50)
    plt.close(fig)


def test_a_plot_with_its_data_passes(tmp_path):
    _figure(tmp_path / "p.png", draw=True)
    image = assert_plot(tmp_path / "p.png", (200, 150), colours=("tab:purple",), absent=("tab:red",))
    assert colour_pixels(image, "tab:purple") > 50


@pytest.mark.parametrize("case", ["blank", "size", "missing colour", "unwanted colour", "not a png"])
def test_the_checker_fails_a_plot_that_does_not_show_its_data(tmp_path, case):
    path = tmp_path / "p.png"
    _figure(path, draw=case != "missing colour")
    kwargs = {"size": (200, 150), "colours": ("tab:purple",)}
    if case == "blank":
        plt.imsave(path, np.ones((150, 200, 3)))
        kwargs["colours"] = ()
    elif case == "size":
        kwargs["size"] = (201, 150)
    elif case == "unwanted colour":
        kwargs["absent"] = ("tab:purple",)
    elif case == "not a png":
        path.write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(AssertionError):
        assert_plot(path, **kwargs)
    if case == "blank":
        assert read_png(path).shape == (150, 200, 3)
