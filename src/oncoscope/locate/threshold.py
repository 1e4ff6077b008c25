"""The localisation threshold of a checkpoint: recorded by ``evaluate --localization``, read by
``locate``.

``evaluate --localization`` picks the threshold of the ``0..1`` maps on the validation split
(:func:`oncoscope.explain.localization_report.score_localization`) and records it beside the
checkpoint in ``<checkpoint>.localization.json`` with what it depends on: the CAM method, layers
and stage, the version of the maps' definitions, the checkpoint's SHA-256, the manifest and the
split. ``locate`` never picks a
threshold on what it locates: it reads this record, or takes ``--threshold``; with neither it
refuses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from oncoscope.errors import InvalidOptionError, OncoscopeError, OutputWriteError
from oncoscope.explain.cam import maps_version
from oncoscope.inference.status import file_sha256, settings_differences
from oncoscope.io.atomic import write_json

#: Appended to the checkpoint's file name.
RECORD_SUFFIX = ".localization.json"
#: The settings a recorded threshold belongs to (a record made with others is not reused).
_SETTINGS = (
    "checkpoint_sha256",
    "maps_version",
    "method",
    "layers",
    "stage",
    "manifest",
    "val_split",
)


@dataclass(frozen=True)
class ThresholdChoice:
    """The map threshold ``locate`` uses and where it came from.

    Attributes:
        threshold: threshold of the ``0..1`` maps, in ``(0, 1)``.
        source: ``"--threshold"`` or the record file it was read from.
        method: the CAM method the threshold was picked for (None with ``--threshold``).
        layers: the layers read (empty: the model's stage ``stage``).
        stage: the feature stage read when ``layers`` is empty.
    """

    threshold: float
    source: str
    method: str | None
    layers: tuple[str, ...]
    stage: int


def record_path(checkpoint: str | Path) -> Path:
    """``<checkpoint>.localization.json``, beside the checkpoint."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + RECORD_SUFFIX)


def check_threshold(threshold: float, where: str | Path | None = None) -> float:
    """Return ``threshold`` if it lies strictly between 0 and 1.

    Raises:
        InvalidOptionError: NaN, or a value outside ``(0, 1)`` (``where`` names its origin).
    """
    if not 0.0 < threshold < 1.0:  # False for NaN too
        raise InvalidOptionError(
            f"localisation threshold {threshold:g} is outside (0, 1); maps are scaled to 0..1",
            where,
        )
    return float(threshold)


def write_record(
    checkpoint: str | Path,
    *,
    threshold: float,
    method: str,
    layers: tuple[str, ...] | list[str],
    stage: int,
    manifest: str | Path,
    val_split: str,
    val_dice: float,
) -> tuple[Path, str | None]:
    """Record the threshold picked on validation beside the checkpoint (atomic write).

    A record made with other settings (another method, layer, manifest, split, or another
    checkpoint file under the same name) is replaced, and the returned note says what changed.

    Returns:
        ``(path, note)``: the record, and None or a one-line note on the record it replaced.

    Raises:
        OutputWriteError: the checkpoint's folder is not writable.
    """
    path = record_path(checkpoint)
    record: dict[str, Any] = {
        "threshold": float(threshold),
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": file_sha256(checkpoint),
        "maps_version": maps_version(method),
        "method": method,
        "layers": list(layers),
        "stage": int(stage),
        "manifest": str(Path(manifest).resolve()),
        "val_split": val_split,
        "val_dice": float(val_dice),
        "picked": "threshold maximising the mean Dice of the maps on the validation split",
        "written": datetime.now(UTC).isoformat(),
    }
    note = None
    old = _read_json(path)
    if old is not None:
        recorded = {k: old.get(k) for k in _SETTINGS}
        recorded["maps_version"] = _maps_version_of(old)
        changes = settings_differences(recorded, {k: record[k] for k in _SETTINGS})
        if changes:
            note = (
                f"replaced the threshold {old.get('threshold')} recorded with other settings "
                f"({'; '.join(changes)}) by {record['threshold']}"
            )
    try:
        write_json(path, record, indent=2)
    except OSError as error:
        raise OutputWriteError(f"cannot write ({error.strerror or error})", path) from error
    return path, note


def choose_threshold(checkpoint: str | Path, override: float | None) -> ThresholdChoice:
    """The threshold for ``locate``: ``--threshold`` if given, else the checkpoint's record.

    Args:
        checkpoint: the checkpoint file.
        override: ``--threshold``, or None.

    Raises:
        InvalidOptionError: a threshold outside ``(0, 1)``.
        OncoscopeError: no ``--threshold`` and no record (the message says how to get one), an
            unreadable record, one made for another checkpoint file, or one picked on maps
            that oncoscope now makes otherwise (:data:`oncoscope.explain.cam.MAPS_VERSIONS`).
    """
    if override is not None:
        return ThresholdChoice(
            check_threshold(override, "--threshold"), "--threshold", None, (), -1
        )
    path = record_path(checkpoint)
    how = (
        f"run `oncoscope evaluate {checkpoint} --data MANIFEST --out DIR --localization` "
        "(it picks one on the validation split) or pass --threshold"
    )
    if not path.is_file():
        raise OncoscopeError(
            f"no localisation threshold recorded ({path.name} missing): {how}", checkpoint
        )
    record = _read_json(path)
    if record is None or not isinstance(record.get("threshold"), int | float):
        raise OncoscopeError(f"not a localisation threshold record: {how}", path)
    if record.get("checkpoint_sha256") != file_sha256(checkpoint):
        raise OncoscopeError(f"recorded for another checkpoint file (SHA-256 differs): {how}", path)
    method = str(record.get("method") or "gradcam")
    version = _maps_version_of(record)
    if version != maps_version(method):
        raise OncoscopeError(
            f"picked on {method} maps of an earlier oncoscope (maps version {version}, now "
            f"{maps_version(method)}): run `oncoscope evaluate {checkpoint} --data MANIFEST "
            f"--out DIR --localization --cam-method {method}` again or pass --threshold",
            path,
        )
    return ThresholdChoice(
        threshold=check_threshold(float(record["threshold"]), path),
        source=str(path),
        method=method,
        layers=tuple(str(v) for v in record.get("layers") or ()),
        stage=int(record.get("stage", -1)),
    )


def _maps_version_of(record: dict[str, Any]) -> Any:
    """The maps version a record was picked on (records before version 2 did not say: 1)."""
    return record.get("maps_version", 1)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
