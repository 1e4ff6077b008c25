"""The manifest: one CSV row per image, the seam between data preparation and learning.

Every preparation command (``ct prepare``, ``wsi tile``) writes ``manifest.csv``; every learning
command reads one. Paths in it are relative to the manifest's folder, so the folder can be moved.
The columns every manifest has are :data:`REQUIRED_COLUMNS`; ``group`` is the unit that never
crosses splits (the patient for CT, the slide for histology).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from oncoscope.dataset.split import SPLITS
from oncoscope.errors import ManifestError
from oncoscope.io.atomic import atomic_path

REQUIRED_COLUMNS = ("path", "group", "label", "split")

#: Columns of a CT slice manifest, in order (``ct prepare``).
CT_COLUMNS = (
    "path",
    "patient_id",
    "slice_index",
    "label",
    "split",
    "lesion_count",
    "max_lesion_mm",
    "liver_fraction",
    "group",
    "max_section_mm",
    "all_small",
    "row_mm",
    "col_mm",
    "slice_mm",
    "window",
    "source",
    "lesion_mask",
    "liver_mask",
    "source_relative",
    "chain",
    "roi_dice",
    "roi_empty",
)


def write_manifest(
    rows: Iterable[Mapping[str, Any]], path: str | Path, columns: Sequence[str]
) -> Path:
    """Write rows to ``path`` as CSV (atomically), columns in the given order.

    Raises:
        ManifestError: a row lacks one of ``columns``.
    """
    path = Path(path)
    frame = pd.DataFrame(list(rows), columns=list(columns))
    missing = [c for c in columns if c in frame and frame[c].isna().any()]
    if missing:
        raise ManifestError(f"rows lack values for columns {missing}", path)
    with atomic_path(path) as temporary:
        frame.to_csv(temporary, index=False, float_format="%.6g")
    return path


def read_manifest(path: str | Path, *, required: Sequence[str] = REQUIRED_COLUMNS) -> pd.DataFrame:
    """Read a manifest and check its columns and split values.

    Returns:
        The rows, with ``path`` made absolute (resolved against the manifest's folder).

    Raises:
        ManifestError: missing file, missing columns, empty, an empty ``path``, ``label`` or
            ``split`` cell (named by its line in the file), or split values other than
            train/val/test.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError("manifest does not exist", path)
    try:
        frame = pd.read_csv(path, dtype={"group": str, "patient_id": str, "label": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ManifestError(f"cannot parse CSV ({type(error).__name__})", path) from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ManifestError(f"missing columns {missing}; a manifest needs {list(required)}", path)
    if frame.empty:
        raise ManifestError("manifest has no rows", path)
    for column in ("path", "label", "split"):
        if column not in frame.columns or column not in required:
            continue
        blank = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if blank.any():
            lines = [int(i) + 2 for i in frame.index[blank]]  # line 1 is the header
            shown = ", ".join(str(n) for n in lines[:5]) + (", ..." if len(lines) > 5 else "")
            raise ManifestError(
                f"empty {column} on line{'s' if len(lines) > 1 else ''} {shown}; "
                f"every row needs a {column}",
                path,
            )
    if "split" in frame.columns:
        bad = sorted(set(frame["split"].astype(str)) - set(SPLITS))
        if bad:
            raise ManifestError(f"split values {bad} are not train/val/test", path)
    frame["path"] = [
        "" if pd.isna(p) or not str(p).strip() else str((path.parent / str(p)).resolve())
        for p in frame["path"]
    ]
    return frame
