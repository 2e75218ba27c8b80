"""A small RGB renderer: one horizontal bar per quantity, for videos of scheduling episodes.

The image is drawn with numpy alone (no plotting library), so ``render_mode="rgb_array"`` works in
every installation, including inside the vectorised environments that stable-baselines3 builds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BAR_HEIGHT = 16
GAP = 6
WIDTH = 320
PALETTE = np.array(
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189]],
    dtype=np.uint8,
)


def bars_image(fractions: Sequence[float], groups: Sequence[int]) -> np.ndarray:
    """Draw one bar per value on a white background.

    Args:
        fractions: Bar lengths as fractions of the image width (clipped to [0, 1]).
        groups: Colour group of each bar (for example 0 for queues, 1 for GPUs).

    Returns:
        An ``(height, WIDTH, 3)`` uint8 image.
    """
    n = len(fractions)
    height = GAP + n * (BAR_HEIGHT + GAP)
    image = np.full((height, WIDTH, 3), 255, dtype=np.uint8)
    for i, (fraction, group) in enumerate(zip(fractions, groups)):
        top = GAP + i * (BAR_HEIGHT + GAP)
        image[top : top + BAR_HEIGHT, :, :] = 235  # the track
        length = int(round(min(max(float(fraction), 0.0), 1.0) * WIDTH))
        image[top : top + BAR_HEIGHT, :length] = PALETTE[group % len(PALETTE)]
    return image
