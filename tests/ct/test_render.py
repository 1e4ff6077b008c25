"""A trained CT model's checkpoint renders a new HU slice as ``ct prepare`` rendered its PNGs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from oncoscope.ct.render import slice_to_model_input
from oncoscope.ct.slice_dataset import PrepareOptions, prepare_dataset
from oncoscope.ct.window import parse_windows
from oncoscope.errors import OncoscopeError
from oncoscope.io.volumes import read_volume
from oncoscope.models.spec import ModelSpec
from oncoscope.train.data import load_training_data


def _spec_of(manifest, in_chans: int) -> ModelSpec:
    """The spec ``oncoscope train`` stores for a model trained on ``manifest``."""
    data = load_training_data(manifest)
    return ModelSpec.from_dict(
        {
            "model": "simple_cnn",
            "classes": data.classes,
            "in_chans": data.in_chans,
            "image_size": data.image_size,
            "mean": [0.5] * in_chans,
            "std": [0.25] * in_chans,
            "preprocessing": data.preprocessing,
        }
    )


@pytest.mark.parametrize(("windows", "size_px"), [("liver", None), ("multi", 48)])
def test_slices_rendered_from_the_checkpoint_equal_the_training_pngs(
    lits_dir, tmp_path, windows, size_px
):
    options = PrepareOptions(
        windows=parse_windows(windows), healthy_per_patient=1, seed=1, size_px=size_px
    )
    report = prepare_dataset(lits_dir, tmp_path, options)
    assert report.failures == []
    channels = len(options.windows)
    spec = _spec_of(report.manifest, channels)
    assert spec.ct_windows == options.windows and spec.ct_size_px == size_px
    frame = pd.read_csv(report.manifest, dtype={"patient_id": str})
    checked = 0
    for _, rows in frame.groupby("patient_id"):
        volume = read_volume(rows["source"].iloc[0])
        for _, row in rows.head(2).iterrows():
            hu = volume.array[int(row["slice_index"])]
            rendered = slice_to_model_input(hu, volume.spacing_mm[1:], spec)
            png = np.asarray(Image.open(tmp_path / row["path"]))
            assert rendered.pixels.dtype == np.uint8 and rendered.pixels.shape == png.shape
            np.testing.assert_array_equal(rendered.pixels, png)
            assert rendered.pixel_mm == pytest.approx((row["row_mm"], row["col_mm"]), rel=1e-5)
            checked += 1
    assert checked >= 5


def test_a_model_without_a_ct_window_is_refused():
    spec = ModelSpec.from_dict(
        {"model": "m", "classes": ["a", "b"], "in_chans": 3, "image_size": 32,
         "mean": [0.5] * 3, "std": [0.25] * 3, "preprocessing": {"mpp": 0.5}}
    )  # fmt: skip
    with pytest.raises(OncoscopeError, match="records no CT window"):
        slice_to_model_input(np.zeros((8, 8)), (1.0, 1.0), spec)
