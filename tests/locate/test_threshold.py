"""The localisation threshold: picked on validation by ``evaluate --localization``, recorded
beside the checkpoint, read by ``locate``; never picked on what is located."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.errors import InvalidOptionError, OncoscopeError
from oncoscope.explain.cam import maps_version
from oncoscope.explain.localization_report import score_localization
from oncoscope.locate.threshold import choose_threshold, record_path, write_record
from tests.explain.conftest import TinyGapNet, use_tiny_models, write_checkpoint
from tests.explain.test_run import KWARGS, lesion_manifest


@pytest.fixture
def checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_tiny_models(monkeypatch)
    model = TinyGapNet(**KWARGS)
    return write_checkpoint(
        tmp_path / "tiny.ckpt", model, "tiny_gap", KWARGS, ["healthy", "tumour"], 16
    )


def test_evaluate_localization_records_the_validation_threshold_for_locate(
    tmp_path: Path, checkpoint: Path
) -> None:
    manifest = lesion_manifest(tmp_path / "data")
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        [
            *("evaluate", str(checkpoint), "--data", str(manifest), "--out", str(out)),
            *("--resamples", "20", "--localization", "--cam-method", "cam"),
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(record_path(checkpoint).read_text())
    # the val images alone fix it: lesion 250 on 125 -> any threshold in (0.5, 1]; first 0.501
    assert record["threshold"] == pytest.approx(0.501)
    assert record["method"] == "cam" and record["val_split"] == "val"
    assert str(record_path(checkpoint)) in result.output
    choice = choose_threshold(checkpoint, None)
    assert choice.threshold == pytest.approx(0.501) and choice.method == "cam"
    assert choice.source == str(record_path(checkpoint))
    assert choose_threshold(checkpoint, 0.3).threshold == 0.3  # --threshold overrides


def test_a_record_made_with_other_settings_is_replaced_and_said_so(
    tmp_path: Path, checkpoint: Path
) -> None:
    manifest = lesion_manifest(tmp_path / "data")
    first = score_localization(checkpoint, manifest, "test", method="cam", out_dir=tmp_path / "a")
    assert first["threshold_record_note"] is None
    same = score_localization(checkpoint, manifest, "test", method="cam", out_dir=tmp_path / "b")
    assert same["threshold_record_note"] is None
    other = score_localization(
        checkpoint, manifest, "test", method="gradcam", out_dir=tmp_path / "c"
    )
    assert "other settings" in other["threshold_record_note"]
    assert "method" in other["threshold_record_note"]


def test_no_threshold_without_a_record_or_option(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(OncoscopeError) as caught:
        choose_threshold(checkpoint, None)
    message = str(caught.value)
    assert message.startswith(str(checkpoint))
    assert "evaluate" in message and "--localization" in message and "--threshold" in message


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.5, 2.0, float("nan")])
def test_thresholds_outside_zero_one_are_refused(
    bad: float, tmp_path: Path, checkpoint: Path
) -> None:
    with pytest.raises(InvalidOptionError, match=r"outside \(0, 1\)"):
        choose_threshold(checkpoint, bad)
    write_record(
        checkpoint, threshold=bad, method="cam", layers=[], stage=-1,
        manifest=tmp_path / "m.csv", val_split="val", val_dice=0.0,
    )  # fmt: skip
    with pytest.raises(InvalidOptionError, match=r"outside \(0, 1\)") as caught:
        choose_threshold(checkpoint, None)
    assert str(record_path(checkpoint)) in str(caught.value)


def test_a_record_of_another_checkpoint_file_is_refused(tmp_path: Path, checkpoint: Path) -> None:
    write_record(
        checkpoint, threshold=0.4, method="cam", layers=[], stage=-1,
        manifest=tmp_path / "m.csv", val_split="val", val_dice=0.5,
    )  # fmt: skip
    assert choose_threshold(checkpoint, None).threshold == 0.4
    checkpoint.write_bytes(checkpoint.read_bytes() + b"retrained")
    with pytest.raises(OncoscopeError, match="another checkpoint"):
        choose_threshold(checkpoint, None)


def _record(checkpoint: Path, tmp_path: Path, method: str, threshold: float) -> str | None:
    """Record a threshold for ``method``; returns the note on the record it replaced."""
    return write_record(
        checkpoint, threshold=threshold, method=method, layers=[], stage=-1,
        manifest=tmp_path / "m.csv", val_split="val", val_dice=0.5,
    )[1]  # fmt: skip


def _as_before_versions(checkpoint: Path) -> dict[str, Any]:
    """Rewrite the record as oncoscope wrote it before maps were versioned (no
    ``maps_version``); returns what it held."""
    path = record_path(checkpoint)
    record: dict[str, Any] = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in record.items() if k != "maps_version"}))
    return record


def test_a_record_picked_on_maps_made_otherwise_is_refused_and_replaced(
    tmp_path: Path, checkpoint: Path
) -> None:
    # before the maps' version was recorded, SmoothGrad's noise moved with the batch: such a
    # guided threshold belongs to maps locate no longer makes
    _record(checkpoint, tmp_path, "guided", 0.4)
    _as_before_versions(checkpoint)
    now = maps_version("guided")
    with pytest.raises(OncoscopeError, match=f"maps version 1, now {now}") as caught:
        choose_threshold(checkpoint, None)
    message = str(caught.value)
    assert message.startswith(str(record_path(checkpoint))) and "evaluate" in message
    assert "--cam-method guided" in message
    assert choose_threshold(checkpoint, 0.3).threshold == 0.3  # --threshold still overrides
    note = _record(checkpoint, tmp_path, "guided", 0.45)
    assert note is not None and "maps_version" in note
    assert choose_threshold(checkpoint, None).threshold == 0.45


def test_a_record_of_a_method_whose_maps_never_changed_stays_good(
    tmp_path: Path, checkpoint: Path
) -> None:
    _record(checkpoint, tmp_path, "cam", 0.4)
    assert _as_before_versions(checkpoint)["maps_version"] == maps_version("cam") == 1
    assert choose_threshold(checkpoint, None).threshold == 0.4
    assert _record(checkpoint, tmp_path, "cam", 0.4) is None  # nothing replaced
