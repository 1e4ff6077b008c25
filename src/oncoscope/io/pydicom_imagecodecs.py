"""A pydicom pixel-data decoder plugin: 12-bit JPEG Extended through imagecodecs.

pydicom's permissively licensed decoders (GDCM, Pillow) refuse 12-bit JPEG Extended (Process 2
and 4), the lossy JPEG of many older CT archives; only pylibjpeg-libjpeg, under the GPL, reads
it. imagecodecs, already a dependency of oncoscope (BSD), decodes it with libjpeg-turbo 3. This
module follows pydicom's decoder-plugin interface (``is_available``, ``DECODER_DEPENDENCIES``
and a frame decoder), and :func:`register` adds it to pydicom's JPEG Extended decoder.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import JPEGExtended12Bit

LABEL = "oncoscope-imagecodecs"
DECODER_DEPENDENCIES = {JPEGExtended12Bit: ("imagecodecs>=2024.6",)}


def is_available(uid: str) -> bool:
    """True when imagecodecs can decode transfer syntax ``uid`` (only 12-bit JPEG Extended)."""
    if uid != JPEGExtended12Bit:
        return False
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(imagecodecs.JPEG8.available)


def decode_frame(src: bytes, runner: Any) -> bytes:
    """One JPEG Extended frame as little-endian samples of the dataset's Bits Allocated.

    Args:
        src: the frame's JPEG codestream.
        runner: pydicom's ``DecodeRunner`` for the dataset.

    Raises:
        ValueError: ``src`` is not a decodable JPEG (imagecodecs' error).
    """
    import imagecodecs

    pixels = np.asarray(imagecodecs.jpeg8_decode(src))
    itemsize = 1 if int(runner.bits_allocated) <= 8 else 2
    return bytes(pixels.astype(f"<u{itemsize}").tobytes())


def register() -> None:
    """Add the plugin to pydicom's 12-bit JPEG Extended decoder, once; after pydicom's own."""
    decoder = get_decoder(JPEGExtended12Bit)
    if LABEL not in decoder.available_plugins and is_available(JPEGExtended12Bit):
        decoder.add_plugin(LABEL, (__name__, "decode_frame"))
