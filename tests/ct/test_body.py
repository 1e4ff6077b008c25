"""The body on a rendered CT slice: the air around the patient is out, all of the patient in."""

from __future__ import annotations

import numpy as np
import pytest

from oncoscope.ct.body import body_mask, body_on_grid


def _ellipse(shape: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float]):
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1.0


def _slice(gap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A 160-px slice in a soft-tissue window: skin and muscle a ring (value 140) around fat
    at the window's floor (0), a liver (120) inside; a stray bright speck in the air. Returns
    the pixels and the body as drawn (the ring's outer ellipse)."""
    shape = (160, 160)
    outer = _ellipse(shape, (80, 80), (60, 72))
    inner = _ellipse(shape, (80, 80), (55, 67))
    pixels = np.zeros(shape, np.uint8)
    pixels[outer & ~inner] = 140
    pixels[_ellipse(shape, (75, 60), (30, 35))] = 120
    if gap:  # the ring broken on the patient's left: fat reaches the skin
        pixels[60:100, 140:] = 0
    pixels[3:6, 3:6] = 200  # a 9-px speck in a corner
    return pixels, outer


@pytest.mark.parametrize("gap", [False, True])
def test_the_body_is_the_patient_and_none_of_the_air(gap: bool) -> None:
    pixels, drawn = _slice(gap)
    body = body_mask(pixels)
    if not gap:
        # a hull of a drawn ellipse: all of it but pixels on its digitised edge
        assert (body & drawn).sum() / drawn.sum() > 0.99
    assert body[_ellipse(pixels.shape, (80, 80), (54, 66))].all()  # fat and liver inside
    assert not body[:10, :10].any() and not body[~_ellipse(pixels.shape, (80, 80), (62, 74))].any()


def test_three_windows_and_a_slice_of_air_alone() -> None:
    pixels, _ = _slice()
    rgb = np.zeros((*pixels.shape, 3), np.uint8)
    rgb[..., 2] = pixels  # the body above the floor of one window only
    np.testing.assert_array_equal(body_mask(rgb), body_mask(pixels))
    assert body_mask(np.zeros((64, 64), np.uint8)).all()  # no body to tell: nothing ruled out
    with pytest.raises(ValueError, match="slice"):
        body_mask(np.zeros(5, np.uint8))


def test_the_body_on_the_models_grid() -> None:
    pixels, _ = _slice()
    small = body_on_grid(pixels, 80)
    assert small.shape == (80, 80)
    # the drawn body at half the size: the same share of the image, inside and out alike
    half = _ellipse((80, 80), (39.75, 39.75), (30, 36))
    assert abs(small.mean() - half.mean()) < 0.01
    assert small[_ellipse((80, 80), (39.75, 39.75), (28, 34))].all()
    assert not small[~_ellipse((80, 80), (39.75, 39.75), (32, 38))].any()
    np.testing.assert_array_equal(body_on_grid(pixels, 160), body_mask(pixels))


def test_air_above_the_floor_rules_nothing_out_and_an_roi_slice_keeps_its_roi() -> None:
    pixels, _ = _slice()
    lung_window = pixels.copy()
    lung_window[lung_window == 0] = 60  # air at -1000 HU above a -1350 HU floor
    assert body_mask(lung_window).all()
    liver = _ellipse(pixels.shape, (75, 60), (30, 35))
    roi_only = np.where(liver, pixels, 0).astype(np.uint8)  # ct prepare --roi: liver alone
    body = body_mask(roi_only)
    assert body[_ellipse(pixels.shape, (75, 60), (29, 34))].all()
    assert not body[~_ellipse(pixels.shape, (75, 60), (31, 36))].any()
