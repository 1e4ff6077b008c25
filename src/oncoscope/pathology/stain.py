"""Stain normalisation (Macenko, Reinhard) and stain augmentation, over torchstain.

torchstain's torch backend does the work; this module only converts between oncoscope's
``(rows, cols, 3) uint8`` RGB arrays (or ``(3, H, W)`` tensors from a torchvision pipeline) and
its ``(3, H, W)`` 0..255 tensors, fits the target on a user-given reference tile, and seeds the
augmentation so a run can be replayed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from oncoscope.errors import InvalidOptionError, UnsupportedFormatError

StainMethod = Literal["macenko", "reinhard"]
METHODS: tuple[StainMethod, ...] = ("macenko", "reinhard")


def read_rgb(path: str | Path) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Read an image file as ``(rows, cols, 3) uint8`` RGB.

    Raises:
        UnsupportedFormatError: not an image PIL can read.
    """
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise UnsupportedFormatError(f"cannot read image: {error}", path) from None


class StainNormalizer:
    """Map a tile's stain appearance to a reference tile's.

    Args:
        method: ``"macenko"`` (stain vectors and concentrations, H&E) or ``"reinhard"``
            (LAB means and standard deviations).

    Example:
        >>> from skimage.data import immunohistochemistry
        >>> ihc = immunohistochemistry()[:128, :128]
        >>> out = StainNormalizer("reinhard").fit(ihc)(ihc[::-1].copy())
        >>> out.shape, out.dtype.name
        ((128, 128, 3), 'uint8')
    """

    def __init__(self, method: str = "macenko") -> None:
        import torchstain

        if method not in METHODS:
            raise InvalidOptionError(f"stain method '{method}' is not one of {', '.join(METHODS)}")
        self.method = method
        if method == "macenko":
            self._normaliser: Any = torchstain.normalizers.MacenkoNormalizer(backend="torch")
        else:
            self._normaliser = torchstain.normalizers.ReinhardNormalizer(backend="torch")

    def fit(self, reference: np.ndarray[Any, Any]) -> StainNormalizer:
        """Fit the target stain on a reference tile, ``(rows, cols, 3) uint8`` RGB."""
        self._normaliser.fit(_to_chw(reference))
        return self

    def state(self) -> dict[str, Any]:
        """The fitted target as plain values (JSON, checkpoints), not a path to the reference.

        ``{"method": "macenko", "stain_matrix": (3, 2) H&E optical-density vectors,
        "max_concentrations": (2,)}`` or ``{"method": "reinhard", "lab_means": (3,),
        "lab_stds": (3,)}``; :meth:`from_state` rebuilds the same normaliser.
        """
        n = self._normaliser
        if self.method == "macenko":
            return {
                "method": "macenko",
                "stain_matrix": n.HERef.float().tolist(),
                "max_concentrations": n.maxCRef.float().tolist(),
            }
        return {
            "method": "reinhard",
            "lab_means": torch.as_tensor(n.target_means).float().tolist(),
            "lab_stds": torch.as_tensor(n.target_stds).float().tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> StainNormalizer:
        """The normaliser whose :meth:`state` is ``state``.

        Raises:
            InvalidOptionError: an unknown method or values of the wrong shape.
        """
        method = str(state.get("method"))
        normaliser = cls(method)
        try:
            if method == "macenko":
                matrix = torch.tensor(state["stain_matrix"], dtype=torch.float32)
                maxima = torch.tensor(state["max_concentrations"], dtype=torch.float32)
                if matrix.shape != (3, 2) or maxima.shape != (2,):
                    raise ValueError("shape")
                normaliser._normaliser.HERef, normaliser._normaliser.maxCRef = matrix, maxima
            else:
                means = torch.tensor(state["lab_means"], dtype=torch.float32)
                stds = torch.tensor(state["lab_stds"], dtype=torch.float32)
                if means.shape != (3,) or stds.shape != (3,):
                    raise ValueError("shape")
                normaliser._normaliser.target_means = means
                normaliser._normaliser.target_stds = stds
        except (KeyError, TypeError, ValueError):
            raise InvalidOptionError(f"not a fitted {method} stain target: {state}") from None
        return normaliser

    def __call__(self, rgb: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.uint8]]:
        """Normalise a ``(rows, cols, 3) uint8`` tile; returns the same shape and dtype.

        A tile with too little stain to estimate (e.g. blank glass) is returned unchanged.
        """
        try:
            if self.method == "macenko":
                out, _, _ = self._normaliser.normalize(_to_chw(rgb), stains=False)
            else:
                out = self._normaliser.normalize(_to_chw(rgb))
                out = out if out.shape[-1] == 3 else out.permute(1, 2, 0)
        except (RuntimeError, IndexError, ValueError):
            return np.asarray(rgb, dtype=np.uint8)
        result: np.ndarray[Any, np.dtype[np.uint8]] = np.clip(out.numpy(), 0, 255).astype(np.uint8)
        return result


class StainAugment:
    """Random Macenko stain augmentation, a transform for training pipelines.

    Each call estimates the tile's H&E stain concentrations and scales them by a random factor
    in ``[1 - sigma1, 1 + sigma1]`` plus a random shift in ``[-sigma2, sigma2]`` (torchstain's
    ``MacenkoAugmentor``). Accepts ``(rows, cols, 3) uint8`` arrays or ``(3, H, W)`` tensors
    (uint8 0..255 or float 0..1) and returns the same kind.

    Args:
        sigma1: spread of the multiplicative concentration noise.
        sigma2: spread of the additive concentration noise.
        seed: seed of this transform's own random generator; None draws from torch's global
            generator, as torchvision's random transforms do (``oncoscope train
            --stain-augment`` seeds it per tile from seed, epoch and index).
    """

    def __init__(self, sigma1: float = 0.2, sigma2: float = 0.2, seed: int | None = None) -> None:
        import torchstain

        self._augmentor = torchstain.augmentors.MacenkoAugmentor(
            backend="torch", sigma1=sigma1, sigma2=sigma2
        )
        self._generator = None if seed is None else torch.Generator().manual_seed(seed)

    def __call__(self, image: Any) -> Any:
        """Augment one tile; a tile with too little stain to estimate is returned unchanged."""
        as_tensor = isinstance(image, torch.Tensor)
        floating = as_tensor and image.is_floating_point()
        chw = image if as_tensor else _to_chw(image)
        chw = (chw * 255).round().to(torch.uint8) if floating else chw
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self._generator))
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self._augmentor.fit(chw)
                out = self._augmentor.augment()
        except (RuntimeError, IndexError, ValueError):
            return image
        hwc = torch.clamp(out, 0, 255).to(torch.uint8)
        if not as_tensor:
            return hwc.numpy()
        result = hwc.permute(2, 0, 1)
        return result.float() / 255 if floating else result


def _to_chw(rgb: np.ndarray[Any, Any]) -> torch.Tensor:
    array = np.array(np.asarray(rgb, dtype=np.uint8)[..., :3], copy=True, order="C")
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
