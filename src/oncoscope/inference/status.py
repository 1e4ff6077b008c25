"""Per-slide status file for resuming: ``status.json`` is written last, atomically.

A slide folder counts as finished only when its ``status.json`` says ``state: done`` and its
``settings`` (what determines the outputs: checkpoint identity, resolution, stride, tissue
settings, precision, ...) equal the settings of the run at hand; anything else (no file, a crash
half-way, a file from a run with other settings or without recorded settings) is done again, or
refused when the caller asks for that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from oncoscope.errors import InvalidOptionError
from oncoscope.io.atomic import write_json

STATUS_NAME = "status.json"
#: Bytes read at a time when hashing a file.
HASH_CHUNK = 1 << 20
#: What to do with a slide done before with other settings: redo it, or refuse (an error).
ON_MISMATCH = ("redo", "error")


def check_on_mismatch(on_mismatch: str) -> None:
    """Refuse an ``--on-mismatch`` that is not one of :data:`ON_MISMATCH`.

    Raises:
        InvalidOptionError: another value.
    """
    if on_mismatch not in ON_MISMATCH:
        raise InvalidOptionError(f"--on-mismatch must be one of {', '.join(ON_MISMATCH)}")


def redo_or_refuse(earlier: str, differences: str, on_mismatch: str, slide: str | Path) -> str:
    """The note for a slide whose ``earlier`` output (``"done before"``, ``"a.h5 was made"``)
    was made with other settings (``differences``, see :func:`settings_differences`): it is
    redone, or, with ``on_mismatch="error"``, refused.

    Raises:
        InvalidOptionError: ``on_mismatch`` is ``error`` (naming ``slide``).

    Example:
        >>> redo_or_refuse("done before", "stride: 0.5 -> 1", "redo", "a.svs")
        'done before with other settings (stride: 0.5 -> 1); redone'
    """
    if on_mismatch == "error":
        raise InvalidOptionError(
            f"{earlier} with other settings ({differences}); pass --on-mismatch redo to redo "
            "it, or use another --out",
            slide,
        )
    return f"{earlier} with other settings ({differences}); redone"


def read_status(folder: str | Path) -> dict[str, Any] | None:
    """The record in ``folder/status.json`` when it says the slide is done, else None.

    Example:
        >>> import tempfile; folder = tempfile.mkdtemp()
        >>> read_status(folder) is None
        True
        >>> _ = write_status(folder, {"slide": "a.svs"}); read_status(folder)["slide"]
        'a.svs'
    """
    path = Path(folder) / STATUS_NAME
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(status, dict) or status.get("state") != "done":
        return None
    return status


def is_done(folder: str | Path, settings: Mapping[str, Any] | None = None) -> bool:
    """True when ``folder/status.json`` says the slide is done (with ``settings``, if given).

    Example:
        >>> import tempfile; folder = tempfile.mkdtemp()
        >>> is_done(folder)
        False
        >>> _ = write_status(folder, {"slide": "a.svs", "settings": {"stride": 0.5}})
        >>> is_done(folder), is_done(folder, {"stride": 0.5}), is_done(folder, {"stride": 1.0})
        (True, True, False)
    """
    status = read_status(folder)
    if status is None:
        return False
    return settings is None or not settings_differences(status.get("settings"), settings)


def settings_differences(recorded: Any, wanted: Mapping[str, Any]) -> list[str]:
    """What differs between the settings a status file recorded and those of this run.

    Returns:
        ``"name old -> new"`` per differing setting (in ``wanted``'s order; long hashes cut
        to 12 characters), or ``["no settings recorded"]`` for a status file written without
        them (by an older oncoscope); empty when they match.

    Example:
        >>> settings_differences({"stride": 0.5, "mpp": None}, {"stride": 0.25, "mpp": None})
        ['stride 0.5 -> 0.25']
    """
    if not isinstance(recorded, Mapping):
        return ["no settings recorded"]
    wanted = json.loads(json.dumps(wanted))  # as it would read back from the file
    differences = []
    for name in list(wanted) + [n for n in recorded if n not in wanted]:
        old, new = recorded.get(name), wanted.get(name)
        if old != new:
            differences.append(f"{name} {_shown(old)} -> {_shown(new)}")
    return differences


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in chunks).

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_status(folder: str | Path, record: dict[str, Any]) -> Path:
    """Write ``status.json`` (``state: done``, ``finished`` UTC time, plus ``record``)."""
    path = Path(folder) / STATUS_NAME
    status = {"state": "done", "finished": datetime.now(UTC).isoformat(), **record}
    write_json(path, status, indent=2)
    return path


def clear_status(folder: str | Path) -> None:
    """Remove ``folder/status.json``, before a slide's outputs are written again, so that a run
    stopped half-way never leaves a status that vouches for a mix of old and new files."""
    (Path(folder) / STATUS_NAME).unlink(missing_ok=True)


def _shown(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    return json.dumps(value)
