"""Write outputs under a temporary name and rename them into place when complete.

A crash or a bad input never leaves a half-written file or folder under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it to ``final``, on error remove it.

    Works for files and for folders (an existing folder at ``final`` is replaced).

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # The final suffix is kept so that writers that choose a format by suffix still work.
    temporary = final.with_name(f".partial-{os.getpid()}-{final.name}")
    _remove(temporary)
    try:
        yield temporary
    except BaseException:
        _remove(temporary)
        raise
    if temporary.is_dir():
        _remove(final)
    if temporary.exists():
        temporary.replace(final)


def write_json(final: str | Path, data: Any, **dumps: Any) -> Path:
    """Write ``data`` as JSON to ``final`` through :func:`atomic_path`; ``dumps`` go to
    :func:`json.dumps` (e.g. ``indent=2``). Returns ``final`` as a Path.

    Raises:
        TypeError: ``data`` holds something JSON cannot encode (nothing is left behind).
    """
    final = Path(final)
    with atomic_path(final) as temporary:
        temporary.write_text(json.dumps(data, **dumps))
    return final


def output_files(out_dir: str | Path, **names: str) -> dict[str, Path]:
    """Create ``out_dir`` (with its parents) and name the files a writer puts there.

    Example:
        >>> import tempfile
        >>> paths = output_files(tempfile.mkdtemp(), json="scale.json", curves="curves.png")
        >>> sorted(paths), paths["json"].name, paths["json"].parent.is_dir()
        (['curves', 'json'], 'scale.json', True)
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return {key: folder / name for key, name in names.items()}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
