"""Plots checked by what they show, not by their byte size: a PNG of the expected pixel size, not blank, with
pixels drawn in the colours of the data it should hold (and none in the colours of data it should not)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib import colors as mcolors
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Antialiasing blends a marker's rim into the background; its inside keeps the colour to within a few levels.
TOLERANCE = 6


def read_png(path: str | Path) -> np.ndarray:
    """The image as (height, width, 3) uint8 RGB; fails unless the file is a PNG."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG (starts {data[:8]!r})"
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def colour_pixels(image: np.ndarray, colour: str) -> int:
    """How many pixels are `colour` (a matplotlib colour name or hex), each channel within TOLERANCE."""
    rgb = np.round(np.array(mcolors.to_rgb(colour)) * 255).astype(int)
    return int((np.abs(image.astype(int) - rgb).max(axis=-1) <= TOLERANCE).sum())


def assert_plot(path: str | Path, size: tuple[int, int], colours: tuple[str, ...] = (),
                absent: tuple[str, ...] = (), min_pixels: int = 15, min_ink: float = 0.01) -> np.ndarray:
    """Check the PNG at `path`: `size` is (width, height) in pixels; at least `min_ink` of the pixels are not
    white; each of `colours` covers at least `min_pixels` pixels and none of `absent` does. Returns the image."""
    image = read_png(path)
    assert (image.shape[1], image.shape[0]) == tuple(size), f"{path}: {image.shape[1]}x{image.shape[0]}, not {size}"
    ink = float((image.min(axis=-1) < 245).mean())
    assert ink >= min_ink, f"{path} is blank: {ink:.2%} of its pixels are drawn"
    missing = {c: colour_pixels(image, c) for c in colours if colour_pixels(image, c) < min_pixels}
    assert not missing, f"{path}: too few pixels in the data's colours {missing} (need {min_pixels} each)"
    present = {c: colour_pixels(image, c) for c in absent if colour_pixels(image, c) >= min_pixels}
    assert not present, f"{path}: pixels in colours of data it should not show {present}"
    return image
