"""Overlay pictures: size, outlines, tags, files."""

from __future__ import annotations

import numpy as np
from PIL import Image

from labelaudit.cells.overlay import composite, overlay_image, save_image


def test_composite_colours():
    z = np.zeros((8, 8), np.uint8)
    full = np.full((8, 8), 200, np.uint8)
    rgb = composite({"red": z, "green": z, "blue": full, "yellow": z})
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    assert rgb[..., 2].min() == 255 and rgb[..., :2].max() == 0
    yellow = composite({"red": z, "green": z, "blue": z, "yellow": full})
    assert yellow[0, 0, 0] == yellow[0, 0, 1] > 0 and yellow[0, 0, 2] == 0
    gray = composite({"gray": full})
    assert (gray == gray[..., :1]).all()


def test_overlay_outlines_tags_and_size(known):
    channels, truth = known
    plain = overlay_image(channels, truth, max_side=128)
    assert plain.size == (128, 128) and plain.mode == "RGB"
    arr = np.asarray(plain)
    white = (arr == 255).all(axis=-1)
    assert white.any()  # outlines
    assert not white[64, 0:20].all()
    tagged = overlay_image(channels, truth, max_side=128, tags={1: "Nucleoli", 3: "Golgi"})
    assert (np.asarray(tagged) != arr).any()
    by_list = overlay_image(channels, truth, max_side=128, tags=["Nucleoli", None, "Golgi"])
    np.testing.assert_array_equal(np.asarray(by_list), np.asarray(tagged))
    # A reference mask is outlined in magenta beneath.
    shifted = np.roll(truth, 6, axis=1)
    ref = np.asarray(overlay_image(channels, truth, reference=shifted))
    assert ((ref == [255, 0, 255]).all(axis=-1)).any()
    ids = overlay_image(channels, truth, show_ids=True, tags={99: "absent"})
    assert ids.size == (256, 256)


def test_save_image_formats(tmp_path, known):
    channels, truth = known
    picture = overlay_image(channels, truth, max_side=64)
    jpg = save_image(tmp_path / "o" / "a.jpg", picture)
    png = save_image(tmp_path / "o" / "a.png", picture)
    with Image.open(jpg) as im:
        assert im.format == "JPEG" and im.size == (64, 64)
    with Image.open(png) as im:
        assert im.format == "PNG"
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.jpg", "a.png"]
