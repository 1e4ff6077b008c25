"""Tiles decoded where the model runs: a slide's JPEG tiles sent compressed, decoded on the GPU.

With the model on a GPU, the reader processes' work is mostly JPEG decoding. With decoding on
the device (``--decode device``, the default on CUDA), a reader sends each batch as the
compressed TIFF tiles it is cut from (each stored tile once per batch, however many of the
batch's tiles share it), and the model's process decodes them in one batched call of
torchvision's ``decode_jpeg`` (nvJPEG on CUDA) and cuts every tile out of them on the device.
Tiles that cannot be served so come decoded by the reader as before, in the same batch: slides
OpenSlide reads, reads that resize, RGB-coded JPEG (OpenSlide's Aperio case; decoders assume
YCbCr without markers), other compressions, and stain normalisation (run on the CPU). A batch
the device cannot decode is read again on the CPU, so a broken tile ends in OpenSlide's error
as it does without this path.

On a CPU device the same path runs torchvision's libjpeg-turbo in the model's process: no
faster, but the path and its pixels can be checked without a GPU.

Hand-written because neither torchvision nor the slide readers (OpenSlide, TIAToolbox, cuCIM's
CPU build) cut overlapping tiles from decoded TIFF tiles on the device; the JPEG decoding
itself is torchvision's (deprecated since torchvision 0.29 in favour of TorchCodec's
``decode_jpeg``, not a dependency here; without a decoder ``--decode auto`` stays ``cpu``).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from oncoscope.errors import InvalidOptionError
from oncoscope.io.tiff_tiles import JpegPiece

#: ``--decode`` choices: ``auto`` (on the device when it is CUDA and torchvision decodes JPEG
#: there, else by the readers), ``cpu`` (by the readers) or ``device``.
DECODES = ("auto", "cpu", "device")


@dataclass
class EncodedTiles:
    """A batch of tiles, partly as compressed JPEG tiles to be decoded on the device.

    Attributes:
        pixels: ``(b, H, W, 3) uint8``: the tiles the reader decoded, and the background colour
            where a tile reaches outside the slide (the rest is overwritten on the device).
        streams: the batch's JPEG streams, one after the other (``uint8``, 1-D).
        lengths: ``int64 (s,)`` bytes of each stream.
        placements: ``int64 (p, 10)``: per piece, the tile's slot in the batch, its stream,
            ``(top, bottom, left, right)`` in the decoded stream, the same in the tile.
    """

    pixels: torch.Tensor
    streams: torch.Tensor
    lengths: torch.Tensor
    placements: torch.Tensor

    def __len__(self) -> int:
        return len(self.pixels)

    def pin_memory(self) -> EncodedTiles:
        """The batch in pinned memory (a DataLoader's ``pin_memory`` calls this)."""
        return EncodedTiles(
            self.pixels.pin_memory(), self.streams.pin_memory(), self.lengths, self.placements
        )


@dataclass
class EncodedBatchBuilder:
    """Collects the pieces of a batch's tiles, each stored tile's stream once."""

    pixels: np.ndarray[Any, np.dtype[np.uint8]]
    _streams: dict[Any, int] = field(default_factory=dict)
    _data: list[bytes] = field(default_factory=list)
    _placements: list[tuple[int, ...]] = field(default_factory=list)

    def add(self, slot: int, pieces: Sequence[JpegPiece]) -> None:
        """Tile ``slot`` of the batch is made of ``pieces``."""
        for piece in pieces:
            stream = self._streams.get(piece.key)
            if stream is None:
                stream = self._streams[piece.key] = len(self._data)
                self._data.append(piece.stream)
            self._placements.append((slot, stream, *piece.source, *piece.target))

    def build(self) -> EncodedTiles:
        """The batch to send to the model's process."""
        joined = b"".join(self._data)
        return EncodedTiles(
            torch.from_numpy(self.pixels),
            torch.frombuffer(bytearray(joined), dtype=torch.uint8)
            if joined
            else torch.zeros(0, dtype=torch.uint8),
            torch.tensor([len(data) for data in self._data], dtype=torch.int64),
            torch.tensor(self._placements, dtype=torch.int64).reshape(-1, 10),
        )


def tiles_on_device(
    batch: torch.Tensor | EncodedTiles,
    device: torch.device,
    read_on_cpu: Callable[[], torch.Tensor] | None = None,
) -> torch.Tensor:
    """A batch's ``(b, H, W, 3) uint8`` tiles on ``device``, its JPEG streams decoded there.

    Args:
        batch: decoded tiles, or an :class:`EncodedTiles`.
        device: where the model runs.
        read_on_cpu: reads the batch's tiles again on the CPU, used when the device cannot
            decode a stream (its errors are the slide's); without it the decoder's error is
            raised.

    Raises:
        RuntimeError: a stream the device cannot decode, without ``read_on_cpu``.
    """
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    pixels = batch.pixels.to(device, non_blocking=True)
    if not len(batch.lengths):
        return pixels
    from torchvision.io import ImageReadMode

    streams = list(torch.split(batch.streams, batch.lengths.tolist()))
    try:
        decoded = _decode_jpeg()(streams, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        if read_on_cpu is None:
            raise
        return read_on_cpu().to(device, non_blocking=True)
    for slot, stream, *box in batch.placements.tolist():
        s_top, s_bottom, s_left, s_right, t_top, t_bottom, t_left, t_right = box
        piece = decoded[stream][:, s_top:s_bottom, s_left:s_right]
        pixels[slot, t_top:t_bottom, t_left:t_right] = piece.permute(1, 2, 0)
    return pixels


def resolve_decode(decode: str, device: torch.device) -> str:
    """``--decode`` resolved for a run on ``device``: ``cpu`` or ``device``.

    ``auto`` is ``device`` on CUDA when torchvision decodes JPEG there, else ``cpu``.

    Raises:
        InvalidOptionError: an unknown choice, or ``device`` where torchvision cannot decode.

    Example:
        >>> cpu = torch.device("cpu")
        >>> resolve_decode("auto", cpu), resolve_decode("cpu", cpu), resolve_decode("device", cpu)
        ('cpu', 'cpu', 'device')
    """
    check_decode(decode)
    if decode == "cpu":
        return "cpu"
    if decode == "auto":
        return "device" if device.type == "cuda" and decodes_jpeg_on(str(device)) else "cpu"
    if not decodes_jpeg_on(str(device)):
        raise InvalidOptionError(
            f"--decode device: torchvision cannot decode JPEG on {device} here; use --decode cpu"
        )
    return "device"


def check_decode(decode: str) -> None:
    """Refuse a ``--decode`` that is not one of :data:`DECODES`.

    Raises:
        InvalidOptionError: naming the choices.
    """
    if decode not in DECODES:
        raise InvalidOptionError(f"--decode must be one of {', '.join(DECODES)}, got {decode!r}")


@functools.cache
def decodes_jpeg_on(device: str) -> bool:
    """Whether torchvision's ``decode_jpeg`` decodes a JPEG on ``device`` (tried once)."""
    if torch.device(device).type not in ("cpu", "cuda"):
        return False
    try:
        decode = _decode_jpeg()
        from torchvision.io import encode_jpeg

        decode([encode_jpeg(torch.zeros((3, 16, 16), dtype=torch.uint8))], device=device)
    except (ImportError, RuntimeError, ValueError):
        return False
    return True


@functools.cache
def _decode_jpeg() -> Callable[..., list[torch.Tensor]]:
    """torchvision's batched ``decode_jpeg``, its deprecation notice (pointing to TorchCodec)
    silenced: it is for developers, not for a user's run.

    Raises:
        ImportError: torchvision has no ``decode_jpeg``.
    """
    warnings.filterwarnings(
        "ignore", "The image decoding and encoding capabilities of TorchVision", DeprecationWarning
    )
    from torchvision.io import decode_jpeg

    return decode_jpeg  # type: ignore[no-any-return]
