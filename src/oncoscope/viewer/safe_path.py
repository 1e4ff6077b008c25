"""Resolve a client-given relative path to a file inside the served folder, or refuse it.

Refused (as :class:`~oncoscope.errors.OutsideFolderError`, served as 404): absolute paths, any
``..`` component, and paths that leave the folder once symbolic links are resolved.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from oncoscope.errors import OncoscopeError


class OutsideFolderError(OncoscopeError):
    """A requested path is not a file inside the served folder."""


def inside(root: Path, relative: str) -> Path:
    """The resolved path of ``relative`` under ``root``, when it stays inside ``root``.

    Args:
        root: the served folder (resolved or not).
        relative: a POSIX path relative to ``root`` as a client sent it (already URL-decoded).

    Returns:
        The resolved absolute path (it may not exist; callers check).

    Raises:
        OutsideFolderError: absolute, holds ``..`` or a NUL byte, or resolves outside ``root``.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> inside(root, "a/b.png") == root.resolve() / "a" / "b.png"
        True
        >>> inside(root, "../etc/passwd")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        oncoscope.viewer.safe_path.OutsideFolderError: ../etc/passwd: is not inside the ...
    """
    text = relative.replace("\\", "/")
    pure = PurePosixPath(text)
    if "\x00" in text or pure.is_absolute() or ".." in pure.parts or text.startswith("~"):
        raise OutsideFolderError("is not inside the served folder", relative)
    base = root.resolve()
    resolved = (base / pure).resolve()
    if not resolved.is_relative_to(base):
        raise OutsideFolderError("is not inside the served folder", relative)
    return resolved


def inside_file(root: Path, relative: str) -> Path:
    """:func:`inside`, and the path must be an existing regular file.

    Raises:
        OutsideFolderError: as :func:`inside`, or not an existing file.
    """
    path = inside(root, relative)
    if not path.is_file():
        raise OutsideFolderError("is not a file inside the served folder", relative)
    return path


def relative_to_root(root: Path, path: Path) -> str | None:
    """``path`` as a POSIX path relative to ``root`` (both resolved), or None when outside it."""
    base = root.resolve()
    resolved = path.resolve()
    if not resolved.is_relative_to(base):
        return None
    return resolved.relative_to(base).as_posix()
