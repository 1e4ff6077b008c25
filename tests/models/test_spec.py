"""ModelSpec: old checkpoints' dicts load unchanged, round trips, one normalisation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from oncoscope.ct.window import PRESETS
from oncoscope.errors import InvalidOptionError, OncoscopeError
from oncoscope.models.spec import ModelSpec

# Copied from the checkpoints today's `oncoscope train` writes (the demo's two runs), plus a
# stain target as `wsi tile --stain-normalize reinhard` records it.
OLD_SLIDE_SPEC = {
    "model": "efficientnet_lite0",
    "model_kwargs": {},
    "classes": ["normal", "stroma", "tumour"],
    "in_chans": 3,
    "image_size": 224,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "preprocessing": {
        "mpp": 1,
        "magnification": 10,
        "size": 256,
        "stain": {
            "method": "reinhard",
            "lab_means": [61.2, 24.9, -13.1],
            "lab_stds": [14.8, 9.3, 6.2],
        },
    },
    "group_column": "group",
    "manifest": "/tmp/demo/wsi/tiles/manifest.csv",
    "oncoscope_version": "0.1.0",
}
OLD_CT_SPEC = {
    "model": "efficientnet_lite0",
    "model_kwargs": {},
    "classes": ["healthy", "tumour"],
    "in_chans": 1,
    "image_size": 224,
    "mean": [0.5],
    "std": [0.5],
    "preprocessing": {"window": "liver", "row_mm": 1.48438, "col_mm": 1.48438},
    "group_column": "group",
    "manifest": "/tmp/demo/ct/manifest.csv",
    "oncoscope_version": "0.1.0",
}
# The spec of the hand-built test checkpoints: the required fields only.
MINIMAL = {
    "model": "tiny_gap",
    "model_kwargs": {"conv": [1.0, -1.0]},
    "classes": ["healthy", "tumour"],
    "in_chans": 1,
    "image_size": 16,
    "mean": [0.5],
    "std": [1.0],
}


def test_an_old_slide_spec_loads_with_its_values_and_nothing_lost():
    spec = ModelSpec.from_dict(OLD_SLIDE_SPEC)
    assert spec.classes == ("normal", "stroma", "tumour")
    assert (spec.in_chans, spec.image_size) == (3, 224)
    assert spec.mean == spec.std == (0.5, 0.5, 0.5)
    assert (spec.tile_mpp, spec.tile_magnification, spec.tile_size_px) == (1.0, 10.0, 256)
    assert spec.input_magnification == pytest.approx(10 * 224 / 256)
    assert spec.stain is not None and spec.stain["method"] == "reinhard"
    assert spec.ct_windows == () and spec.ct_size_px is None
    assert spec.group_column == "group" and spec.oncoscope_version == "0.1.0"
    assert spec.to_dict() == OLD_SLIDE_SPEC  # written back exactly as it was read


def test_an_old_ct_spec_gets_its_window_in_hu_from_the_window_name():
    spec = ModelSpec.from_dict(OLD_CT_SPEC)
    assert [(w.low_hu, w.high_hu) for w in spec.ct_windows] == [(-100.0, 200.0)]  # W300/L50
    assert spec.ct_windows[0].level_hu == 50.0 and spec.ct_windows[0].width_hu == 300.0
    assert spec.pixel_mm == (1.48438, 1.48438) and spec.ct_size_px is None
    assert spec.input_magnification is None
    stored = spec.to_dict()
    # every old key and value is kept; the window's HU values are added
    assert {k: v for k, v in stored.items() if k != "preprocessing"} == {
        k: v for k, v in OLD_CT_SPEC.items() if k != "preprocessing"
    }
    assert stored["preprocessing"] == {
        **OLD_CT_SPEC["preprocessing"],
        "window_hu": [{"name": "liver", "low_hu": -100.0, "high_hu": 200.0}],
    }


def test_missing_optional_fields_get_defaults():
    spec = ModelSpec.from_dict({k: v for k, v in MINIMAL.items() if k != "model_kwargs"})
    assert dict(spec.model_kwargs) == {}
    assert spec.tile_mpp is None and spec.stain is None and spec.ct_windows == ()
    assert spec.group_column is None and spec.manifest is None and spec.input_magnification is None


@pytest.mark.parametrize("field", ["model", "classes", "in_chans", "image_size", "mean", "std"])
def test_a_missing_required_field_is_named(field, tmp_path):
    broken = {k: v for k, v in MINIMAL.items() if k != field}
    with pytest.raises(OncoscopeError, match=f"model spec has no {field}") as caught:
        ModelSpec.from_dict(broken, tmp_path / "x.ckpt")
    assert caught.value.path == tmp_path / "x.ckpt"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_size": 16.5}, "image_size 16.5 is not a whole number"),
        ({"mean": [0.5, 0.5]}, r"need 1 values each"),
        ({"std": [0.0]}, "must be positive"),
    ],
)
def test_bad_values_are_one_clear_error(change, message):
    with pytest.raises(OncoscopeError, match=message):
        ModelSpec.from_dict({**MINIMAL, **change})


def test_a_window_name_that_is_no_preset_is_kept_as_text_without_a_window():
    stored = {**MINIMAL, "preprocessing": {"window": "my-own-window"}}
    spec = ModelSpec.from_dict(stored)
    assert spec.ct_windows == () and dict(spec.extra_preprocessing) == {"window": "my-own-window"}
    assert spec.to_dict()["preprocessing"] == {"window": "my-own-window"}


def test_unknown_keys_are_kept_through_a_round_trip():
    future = {
        **OLD_SLIDE_SPEC,
        "calibration": {"temperature": 1.3},
        "preprocessing": {**OLD_SLIDE_SPEC["preprocessing"], "blur_sigma_um": 0.7},
    }
    spec = ModelSpec.from_dict(future)
    assert dict(spec.extra) == {"calibration": {"temperature": 1.3}}
    assert dict(spec.extra_preprocessing) == {"blur_sigma_um": 0.7}
    assert spec.to_dict() == future


@pytest.mark.parametrize("stored", [OLD_SLIDE_SPEC, OLD_CT_SPEC, MINIMAL])
def test_round_trip_through_a_weights_only_checkpoint_and_pickle(stored, tmp_path):
    spec = ModelSpec.from_dict(stored)
    torch.save({"hyper_parameters": {"spec": spec.to_dict()}}, tmp_path / "s.ckpt")
    loaded = torch.load(tmp_path / "s.ckpt", weights_only=True)["hyper_parameters"]["spec"]
    assert ModelSpec.from_dict(loaded) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec  # DataLoader workers, spawned processes


def test_the_recorded_ct_windows_and_size_come_back():
    three = [PRESETS[n] for n in ("liver", "abdomen", "liver-narrow")]
    record = {
        "window": "liver,abdomen,liver-narrow",
        "window_hu": [{"name": w.name, "low_hu": w.low_hu, "high_hu": w.high_hu} for w in three],
        "ct_size_px": 96,
    }
    spec = ModelSpec.from_dict(
        {**MINIMAL, "in_chans": 3, "mean": [0.5] * 3, "std": [1.0] * 3, "preprocessing": record}
    )
    assert spec.ct_windows == tuple(three) and spec.ct_size_px == 96
    assert ModelSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({}, "1-channel input; slides are RGB"),
        ({"in_chans": 3, "mean": [0.5] * 3, "std": [1.0] * 3, "classes": ["a"]}, "fewer than two"),
        ({"in_chans": 3, "mean": [0.5] * 3, "std": [1.0] * 3, "image_size": 4}, "square side"),
    ],
)
def test_slide_checks(change, message, tmp_path):
    spec = ModelSpec.from_dict({**MINIMAL, **change})
    with pytest.raises(OncoscopeError, match=message):
        spec.check_for_slides(tmp_path / "m.ckpt")
    ModelSpec.from_dict(OLD_SLIDE_SPEC).check_for_slides()  # a slide model passes


@pytest.mark.parametrize("source_px", [24, 37])  # the model's size, and one resized to it
def test_the_pil_path_and_the_tensor_path_give_the_same_input(source_px):
    spec = ModelSpec.from_dict(
        {
            **MINIMAL,
            "in_chans": 3,
            "image_size": 24,
            "mean": [0.4, 0.5, 0.6],
            "std": [0.2, 0.3, 0.25],
        }
    )
    rng = np.random.default_rng(source_px)
    pixels = rng.integers(0, 256, (source_px, source_px, 3), dtype=np.uint8)
    # the PIL path: a file's image as a dataset reads it, one at a time
    pil = spec.eval_transform()(v2.functional.pil_to_tensor(Image.fromarray(pixels)))
    # the tensor path: a channels-last uint8 batch, as slide tiles arrive
    batch = torch.from_numpy(np.stack([pixels, pixels[::-1].copy()])).permute(0, 3, 1, 2)
    prepared = spec.prepare(batch)
    assert prepared.shape == (2, 3, 24, 24) and prepared.dtype == torch.float32
    torch.testing.assert_close(prepared[0], pil, atol=1e-6, rtol=0)
    if source_px == 24:  # no resizing: the numbers by hand
        mean, std = np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.3, 0.25])
        by_hand = (pixels.astype(np.float64) / 255 - mean) / std
        np.testing.assert_allclose(prepared[0].permute(1, 2, 0).numpy(), by_hand, atol=1e-6)
        # 0..1 floats are the same images
        torch.testing.assert_close(spec.prepare(batch.float() / 255), prepared, atol=1e-6, rtol=0)


def test_prepare_refuses_a_batch_of_the_wrong_channels():
    spec = ModelSpec.from_dict(MINIMAL)
    with pytest.raises(InvalidOptionError, match=r"\(N, 1, H, W\) batches"):
        spec.prepare(torch.zeros((2, 3, 16, 16), dtype=torch.uint8))
