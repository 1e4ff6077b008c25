"""Per-slide status file for resuming: ``status.json`` is written last, atomically.

A slide folder with ``status.json`` whose ``state`` is ``done`` is finished and skipped on a
re-run; anything else (no file, a crash half-way) is done again from scratch.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from oncoscope.io.atomic import atomic_path

STATUS_NAME = "status.json"


def is_done(folder: str | Path) -> bool:
    """True when ``folder/status.json`` says the slide is done.

    Example:
        >>> import tempfile; folder = tempfile.mkdtemp()
        >>> is_done(folder)
        False
        >>> _ = write_status(folder, {"slide": "a.svs"}); is_done(folder)
        True
    """
    path = Path(folder) / STATUS_NAME
    try:
        return bool(json.loads(path.read_text()).get("state") == "done")
    except (OSError, ValueError, AttributeError):
        return False


def write_status(folder: str | Path, record: dict[str, Any]) -> Path:
    """Write ``status.json`` (``state: done``, ``finished`` UTC time, plus ``record``)."""
    path = Path(folder) / STATUS_NAME
    status = {"state": "done", "finished": datetime.now(UTC).isoformat(), **record}
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(status, indent=2))
    return path
