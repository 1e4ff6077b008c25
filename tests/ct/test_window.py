from __future__ import annotations

import numpy as np
import pytest

from oncoscope.ct.window import (
    PRESETS,
    apply_window,
    from_uint8,
    parse_window,
    parse_windows,
    to_uint8,
    window_stack,
)
from oncoscope.errors import InvalidOptionError


def test_liver_preset_is_minus_100_to_200_hu():
    liver = PRESETS["liver"]
    assert (liver.low_hu, liver.high_hu) == (-100.0, 200.0)
    assert (liver.width_hu, liver.level_hu) == (300.0, 50.0)


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("abdomen", -160.0, 240.0),
        ("400/40", -160.0, 240.0),
        ("150/60", -15.0, 135.0),
        ("1500/-600", -1350.0, 150.0),
        (" Liver ", -100.0, 200.0),
    ],
)
def test_windows_from_presets_and_clinical_width_level(text, low, high):
    window = parse_window(text)
    assert (window.low_hu, window.high_hu) == (low, high)


@pytest.mark.parametrize(
    ("text", "message"),
    [("brian", "unknown window 'brian'"), ("wide/40", "not W/L"), ("-10/40", "positive")],
)
def test_bad_windows_say_what_was_wrong(text, message):
    with pytest.raises(InvalidOptionError, match=message):
        parse_window(text)


def test_window_maps_linearly_and_clips():
    hu = np.array([-1000.0, -100.0, 50.0, 200.0, 3000.0])
    np.testing.assert_allclose(apply_window(hu, PRESETS["liver"]), [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(
        to_uint8(apply_window(hu, PRESETS["liver"])), [0, 0, 128, 255, 255]
    )


def test_uint8_round_trip_is_within_one_quantisation_step():
    hu = np.linspace(-100, 200, 1001)
    back = from_uint8(to_uint8(apply_window(hu, PRESETS["liver"])), PRESETS["liver"])
    assert np.abs(back - hu).max() <= 300 / 255 / 2 + 1e-4


def test_multi_window_stack_has_one_channel_per_window():
    windows = parse_windows("multi")
    assert [w.name for w in windows] == ["liver", "abdomen", "liver-narrow"]
    stack = window_stack(np.full((4, 5), 100.0), windows)
    assert stack.shape == (4, 5, 3)
    np.testing.assert_allclose(stack[0, 0], [200 / 300, 260 / 400, 115 / 150], rtol=1e-6)
    with pytest.raises(InvalidOptionError, match="one window or three"):
        parse_windows("liver,abdomen")
