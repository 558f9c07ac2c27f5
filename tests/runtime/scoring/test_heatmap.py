"""Heatmaps drawn with Pillow: the map over a grey copy of the image, a colour bar, and the words that say what the
colours are."""
import numpy as np

from icrt.runtime.scoring.heatmap import FLOOR, colours, draw_heatmap


def _grid(h, w, side, stride):
    return [(t, left) for t in range(0, h - side + 1, stride) for left in range(0, w - side + 1, stride)]


def test_a_black_image_stays_visible_under_the_map_and_no_colour_is_black():
    rgb = np.zeros((120, 160, 3), np.uint8)
    pos = _grid(120, 160, 40, 20)
    scores = np.linspace(0, 1, len(pos))
    im = np.asarray(draw_heatmap(rgb, (120, 160), pos, 40, scores, 0.5, "black.png"))
    assert colours(np.array([0.0, 0.5, 1.0])).max(axis=-1).min() >= 140  # the map's darkest colour is not black
    lifted = 255 * FLOOR * (1 - 0.5)
    assert im.min() > 0 and np.median(im[40:-40, 40:-150]) > lifted  # the image area: grey and colour, never black


def test_window_maps_use_their_own_range_and_say_so():
    rgb = np.full((100, 100, 3), 90, np.uint8)
    pos = _grid(100, 100, 50, 25)
    scores = np.array([0.40, 0.41, 0.42, 0.43, 0.44, 0.45, 0.46, 0.47, 0.48])
    from PIL import Image

    own = draw_heatmap(rgb, (100, 100), pos, 50, scores, 0.44, "w.png", note="map: 9 local windows")
    patches = draw_heatmap(rgb, (100, 100), pos, 50, scores, 0.44, "w.png")
    assert isinstance(own, Image.Image) and own.size[1] > patches.size[1]  # two legend lines: "(own scale)"
    # the same scores spread over the whole colour bar on their own scale, over a tenth of it on the score range
    spread = [np.ptp(np.asarray(x, dtype=float)[60:120, 30:120], axis=(0, 1)).max() for x in (own, patches)]
    assert spread[0] > 2 * spread[1]
