"""The one exception family of oncoscope.

Every error a user can cause (a bad file, a bad option) is an :class:`OncoscopeError`. The CLI
prints ``str(error)`` as one line and exits with code 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from pathlib import Path


class OncoscopeError(Exception):
    """Base class: a problem with the user's input, reported as one line.

    Args:
        message: what is wrong and, where possible, how to fix it.
        path: the file or folder the problem is in, if any; it leads the message.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.message = message
        self.path = Path(path) if path is not None else None
        super().__init__(message)

    def __str__(self) -> str:
        if self.path is None:
            return self.message
        return f"{self.path}: {self.message}"


class UnsupportedFormatError(OncoscopeError):
    """A file whose format oncoscope cannot read (not NIfTI, not DICOM, not an image)."""


class CorruptFileError(OncoscopeError):
    """A file in a known format that cannot be decoded (truncated, garbled)."""


class MissingMetadataError(OncoscopeError):
    """A file that lacks metadata oncoscope needs (spacing, orientation, rescale)."""


class InvalidVolumeError(OncoscopeError):
    """A volume or mask that reads but cannot be used: empty, mismatched, bad labels."""


class UnevenSlicesError(InvalidVolumeError):
    """A DICOM series whose slices are not evenly spaced: a gap, a duplicate, uneven steps."""


class MixedSeriesError(OncoscopeError):
    """A DICOM folder that holds more than one series."""


class OutputWriteError(OncoscopeError):
    """An output that cannot be written: disk full, quota exceeded, read-only or forbidden."""


class InvalidOptionError(OncoscopeError):
    """An option value that is out of range or malformed."""


class ManifestError(OncoscopeError):
    """A manifest.csv that is missing columns or holds bad values."""


class UnknownModelError(OncoscopeError):
    """A model name neither oncoscope nor timm knows."""


class InvalidAnnotationError(OncoscopeError):
    """Annotations (GeoJSON, label mask) that cannot be used: unreadable, invalid polygons."""


class InvalidLandmarksError(OncoscopeError):
    """Anatomical landmarks that cannot be used: missing, malformed, outside the volume."""


class NoTissueError(OncoscopeError):
    """A slide in which no tissue is found (blank, or only glass at the resolution asked)."""
