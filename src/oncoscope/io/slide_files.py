"""Which files are slides: whole-slide images found in files and folders, with their annotations.

The commands that read slides (``wsi tile``, ``slide``, ``features``) take files and folders;
:func:`find_slides` turns them into :class:`SlideJob` s, one per slide, named by file stem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from oncoscope.errors import OncoscopeError

#: File suffixes taken as slides when a folder is given.
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".bif",
                  ".svslide")  # fmt: skip
#: File suffixes of a slide's annotations in an annotation folder, in the order looked for.
ANNOTATION_SUFFIXES = (".geojson", ".json", ".png")


@dataclass(frozen=True)
class SlideJob:
    """One slide (its id is its file stem) and its annotations file (if any)."""

    slide_id: str
    path: Path
    annotations: Path | None


def find_slides(
    inputs: Sequence[str | Path], annotations: str | Path | None = None
) -> list[SlideJob]:
    """Slides from files and folders (by :data:`SLIDE_SUFFIXES`), each with its annotations.

    ``annotations`` is a file (GeoJSON or label-mask PNG) for a single slide, or a folder where
    a slide's annotations are ``<slide stem>.geojson``, ``.json`` or ``.png``.

    Raises:
        OncoscopeError: an input that does not exist, no slide found, two slides with the same
            stem, or an annotation file given for several slides.
    """
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths.extend(
                p for p in sorted(item.iterdir())
                if p.suffix.lower() in SLIDE_SUFFIXES and not p.name.startswith(".")
            )  # fmt: skip
        elif item.exists():
            paths.append(item)
        else:
            raise OncoscopeError("does not exist", item)
    if not paths:
        raise OncoscopeError(f"no slides ({', '.join(SLIDE_SUFFIXES)}) found", Path(inputs[0]))
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems:
            raise OncoscopeError(
                f"two slides named '{path.stem}' ({stems[path.stem]}); slide ids are file stems "
                "and must be unique",
                path,
            )
        stems[path.stem] = path
    folder = Path(annotations) if annotations is not None else None
    if folder is not None and not folder.exists():
        raise OncoscopeError("annotations do not exist", folder)
    if folder is not None and folder.is_file() and len(paths) > 1:
        raise OncoscopeError(
            "one annotation file given for several slides; pass a folder of <slide>.geojson",
            folder,
        )
    jobs = []
    for stem, path in stems.items():
        found: Path | None = None
        if folder is not None and folder.is_file():
            found = folder
        elif folder is not None:
            candidates = [folder / f"{stem}{suffix}" for suffix in ANNOTATION_SUFFIXES]
            found = next((c for c in candidates if c.is_file()), None)
        jobs.append(SlideJob(stem, path, found))
    return jobs
