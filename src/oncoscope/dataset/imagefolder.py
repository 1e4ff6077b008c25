"""A manifest for an ImageFolder layout: one sub-folder per class (``oncoscope manifest``).

Two layouts are read. ``FOLDER/CLASS/image.png``: images are split by group, the group taken
from each file name with ``group_pattern`` (a regular expression whose first group, or whole
match, is the patient or slide id) or, without it, each image its own group.
``FOLDER/{train,val,test}/CLASS/image.png``: the split is the folder's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from oncoscope.dataset.images import IMAGE_SUFFIXES
from oncoscope.dataset.split import SPLITS, split_groups
from oncoscope.errors import InvalidOptionError, OncoscopeError

COLUMNS = ("path", "label", "split", "group")


def imagefolder_rows(
    folder: str | Path,
    *,
    ratio: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    group_pattern: str | None = None,
) -> list[dict[str, Any]]:
    """Manifest rows (``path`` relative to ``folder``) for an ImageFolder tree.

    Raises:
        OncoscopeError: not a folder, or no class sub-folders with images.
        InvalidOptionError: a bad ``group_pattern`` or a name it does not match.
    """
    root = Path(folder)
    if not root.is_dir():
        raise OncoscopeError("is not a folder", root)
    try:
        pattern = re.compile(group_pattern) if group_pattern else None
    except re.error as error:
        raise InvalidOptionError(f"--group-pattern is not a regular expression ({error})") from None
    presplit = [s for s in SPLITS if (root / s).is_dir()]
    rows: list[dict[str, Any]] = []
    for split_dir in [root / s for s in presplit] or [root]:
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            for image in sorted(class_dir.rglob("*")):
                if image.suffix.lower() not in IMAGE_SUFFIXES or not image.is_file():
                    continue
                relative = image.relative_to(root).as_posix()
                rows.append(
                    {
                        "path": relative,
                        "label": class_dir.name,
                        "split": split_dir.name if presplit else "",
                        "group": _group(image, relative, pattern),
                    }
                )
    if not rows:
        raise OncoscopeError("no images in class sub-folders (FOLDER/CLASS/image.png)", root)
    if not presplit:
        groups = {row["group"]: "x" for row in rows}
        assignment = split_groups(groups, ratio, seed=seed)
        for row in rows:
            row["split"] = assignment[row["group"]]
    return rows


def _group(image: Path, relative: str, pattern: re.Pattern[str] | None) -> str:
    if pattern is None:
        return relative
    match = pattern.search(image.name)
    if match is None:
        raise InvalidOptionError(f"--group-pattern '{pattern.pattern}' does not match {image.name}")
    return match.group(1) if match.groups() else match.group(0)
