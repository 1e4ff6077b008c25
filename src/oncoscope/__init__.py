"""oncoscope: find cancer in medical images with convolutional networks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("oncoscope")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
