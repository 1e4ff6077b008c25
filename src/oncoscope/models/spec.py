"""What a trained model needs to be fed: a typed, frozen spec carried by every checkpoint.

A :class:`ModelSpec` holds the model's name and kwargs, its class names (output order), input
channels and size, the normalisation, and how its training images were made: the resolution of
slide tiles (mpp or magnification, tile side in px), the CT window(s) in HU and the slice size
of ``ct prepare``, the stain normaliser's fitted target (``wsi tile --stain-normalize``). Every
command after training reads it (:func:`oncoscope.train.checkpoint.load_model`) and feeds
images through :meth:`ModelSpec.prepare` (tensor batches) or :meth:`ModelSpec.eval_transform`
(one image at a time), so the numbers come from one place.

In the checkpoint it is stored as plain values (:meth:`ModelSpec.to_dict`, so
``torch.load(weights_only=True)`` reads it), in the layout training has always written:
``model``, ``model_kwargs``, ``classes``, ``in_chans``, ``image_size``, ``mean``, ``std``,
``preprocessing`` (``mpp``, ``magnification``, ``size``, ``window``, ``row_mm``, ``col_mm``,
``stain``, and since this module ``window_hu`` and ``ct_size_px``), ``group_column``,
``manifest``, ``oncoscope_version``. :meth:`ModelSpec.from_dict` reads old checkpoints too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch

from oncoscope.ct.window import HUWindow, parse_windows

if TYPE_CHECKING:
    from torchvision.transforms import v2
from oncoscope.errors import InvalidOptionError, OncoscopeError

#: Keys of a stored spec that :class:`ModelSpec` has fields for (others go to ``extra``).
_TOP_LEVEL = (
    "model",
    "model_kwargs",
    "classes",
    "in_chans",
    "image_size",
    "mean",
    "std",
    "preprocessing",
    "group_column",
    "manifest",
    "oncoscope_version",
)
#: Keys of ``preprocessing`` that have fields (others go to ``extra_preprocessing``).
_PREPROCESSING = (
    "mpp",
    "magnification",
    "size",
    "window",
    "window_hu",
    "ct_size_px",
    "row_mm",
    "col_mm",
    "stain",
    "ct_chain",
)


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


def _plain(value: Any) -> Any:
    """Nested mappings and sequences as plain dicts and lists (``weights_only`` and JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class ModelSpec:
    """A trained model's identity and input contract.

    Attributes:
        model: registry name (:func:`oncoscope.models.create_model`).
        model_kwargs: keyword arguments the model was built with (read-only).
        classes: class names; output ``i`` of the model is ``classes[i]``.
        in_chans: input channels (1 grey CT, 3 RGB).
        image_size: side in px of the square input.
        mean, std: per-channel normalisation in 0..1 units (``in_chans`` values each).
        tile_mpp: microns per pixel slide tiles were cut at (``wsi tile --mpp``), or None.
        tile_magnification: magnification they were cut at (``--magnification``), or None.
        tile_size_px: side in px of the tiles as cut, before resizing to ``image_size``.
        ct_windows: the HU window(s) ``ct prepare`` rendered slices with (one: grey, three:
            one per RGB channel); empty for models not trained on CT slices.
        ct_size_px: the side ``ct prepare --size-px`` resized slices to; None when slices kept
            the volume's size (or the record does not say).
        pixel_mm: ``(row_mm, col_mm)`` pixel size of the training slices in mm, or None.
        ct_chain: the seed-001 chain ``ct prepare --denoise/--roi`` applied to the training
            slices (:meth:`oncoscope.ct.chain.SliceChain.record`), or None for no chain.
        stain: the stain normaliser's fitted target the training tiles were normalised to
            (:meth:`oncoscope.pathology.stain.StainNormalizer.state`), or None.
        group_column: the manifest column grouping images (patient, slide), or None.
        manifest: the training manifest's path, or None.
        oncoscope_version: the version that trained the model, or None.
        extra_preprocessing: preprocessing keys this version has no field for (kept as is).
        extra: top-level keys this version has no field for (kept as is).
    """

    model: str
    classes: tuple[str, ...]
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    model_kwargs: Mapping[str, Any] = field(default_factory=_frozen)
    tile_mpp: float | None = None
    tile_magnification: float | None = None
    tile_size_px: int | None = None
    ct_windows: tuple[HUWindow, ...] = ()
    ct_size_px: int | None = None
    pixel_mm: tuple[float, float] | None = None
    ct_chain: Mapping[str, Any] | None = None
    stain: Mapping[str, Any] | None = None
    group_column: str | None = None
    manifest: str | None = None
    oncoscope_version: str | None = None
    extra_preprocessing: Mapping[str, Any] = field(default_factory=_frozen)
    extra: Mapping[str, Any] = field(default_factory=_frozen)
    _stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise OncoscopeError(
                f"mean {list(self.mean)} and std {list(self.std)} need {self.in_chans} values "
                f"each (in_chans)"
            )
        if any(s <= 0 for s in self.std):
            raise OncoscopeError(f"std {list(self.std)} must be positive")

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], path: str | Path | None = None) -> ModelSpec:
        """The spec a checkpoint stores (this version's or an older one's).

        Required: ``model``, ``classes``, ``in_chans``, ``image_size``, ``mean``, ``std``.
        Everything else is optional: a missing ``model_kwargs`` is ``{}``, a missing
        ``preprocessing`` record means no resolution, window or stain; old checkpoints that
        name their CT window only (``preprocessing.window``, e.g. ``"liver"`` or
        ``"400/40"``) get its HU values from :func:`oncoscope.ct.window.parse_windows`; a name
        that is neither (a hand-made manifest's) gives no window and is kept as text. Unknown
        keys are kept in ``extra`` and ``extra_preprocessing``.

        Args:
            spec: the stored mapping.
            path: the checkpoint, named in errors.

        Raises:
            OncoscopeError: a missing required field (named), or a value of the wrong type.

        Example:
            >>> spec = ModelSpec.from_dict({"model": "resnet18", "classes": ["a", "b"],
            ...     "in_chans": 3, "image_size": 224, "mean": [0.5] * 3, "std": [0.25] * 3})
            >>> spec.classes, spec.model_kwargs, spec.tile_mpp
            (('a', 'b'), mappingproxy({}), None)
        """
        missing = [k for k in ("model", "classes", "in_chans", "image_size", "mean", "std")
                   if spec.get(k) is None]  # fmt: skip
        if missing:
            raise OncoscopeError(
                f"the checkpoint's model spec has no {', '.join(missing)}; it was not written "
                "by oncoscope train (or write_checkpoint)",
                path,
            )
        made = dict(spec.get("preprocessing") or {})
        try:
            windows = _windows(made)
            # a window name that is no preset nor W/L (a hand-made manifest's): kept as text
            unknown = {"window"} if not windows and made.get("window") else set()
            row_mm, col_mm = made.get("row_mm"), made.get("col_mm")
            return cls(
                model=str(spec["model"]),
                model_kwargs=_frozen(spec.get("model_kwargs")),
                classes=tuple(str(c) for c in spec["classes"]),
                in_chans=_integer(spec["in_chans"], "in_chans"),
                image_size=_integer(spec["image_size"], "image_size"),
                mean=tuple(float(v) for v in spec["mean"]),
                std=tuple(float(v) for v in spec["std"]),
                tile_mpp=_number_or_none(made.get("mpp")),
                tile_magnification=_number_or_none(made.get("magnification")),
                tile_size_px=_size_or_none(made.get("size"), "preprocessing.size"),
                ct_windows=windows,
                ct_size_px=_size_or_none(made.get("ct_size_px"), "preprocessing.ct_size_px"),
                pixel_mm=(
                    (float(row_mm), float(col_mm))
                    if row_mm is not None and col_mm is not None
                    else None
                ),
                ct_chain=(
                    _frozen(made["ct_chain"])
                    if isinstance(made.get("ct_chain"), Mapping) and made["ct_chain"]
                    else None
                ),
                stain=_frozen(made["stain"]) if isinstance(made.get("stain"), Mapping) else None,
                group_column=_text_or_none(spec.get("group_column")),
                manifest=_text_or_none(spec.get("manifest")),
                oncoscope_version=_text_or_none(spec.get("oncoscope_version")),
                extra_preprocessing=_frozen(
                    {k: v for k, v in made.items() if k not in _PREPROCESSING or k in unknown}
                ),
                extra=_frozen({k: v for k, v in spec.items() if k not in _TOP_LEVEL}),
            )
        except OncoscopeError as error:
            raise OncoscopeError(f"bad model spec: {error.message}", path) from None
        except (TypeError, ValueError) as error:
            raise OncoscopeError(f"bad model spec ({error})", path) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain values (str, int, float, list, dict, None) for the checkpoint; see the module
        docstring for the layout. ``ModelSpec.from_dict(spec.to_dict()) == spec``."""
        preprocessing: dict[str, Any] = {
            "mpp": self.tile_mpp,
            "magnification": self.tile_magnification,
            "size": self.tile_size_px,
            "window": ",".join(w.name for w in self.ct_windows) if self.ct_windows else None,
            "window_hu": [
                {"name": w.name, "low_hu": w.low_hu, "high_hu": w.high_hu} for w in self.ct_windows
            ]
            or None,
            "ct_size_px": self.ct_size_px,
            "row_mm": self.pixel_mm[0] if self.pixel_mm else None,
            "col_mm": self.pixel_mm[1] if self.pixel_mm else None,
            "stain": _plain(self.stain) if self.stain is not None else None,
            "ct_chain": _plain(self.ct_chain) if self.ct_chain is not None else None,
        }
        preprocessing = {k: v for k, v in preprocessing.items() if v is not None}
        preprocessing.update(_plain(self.extra_preprocessing))
        return {
            "model": self.model,
            "model_kwargs": _plain(self.model_kwargs),
            "classes": list(self.classes),
            "in_chans": self.in_chans,
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "preprocessing": preprocessing,
            "group_column": self.group_column,
            "manifest": self.manifest,
            "oncoscope_version": self.oncoscope_version,
            **_plain(self.extra),
        }

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        """Pickled as its plain dict (DataLoader workers, distributed runs)."""
        return (ModelSpec.from_dict, (self.to_dict(),))

    @property
    def input_magnification(self) -> float | None:
        """The magnification of what the model sees, from the tiles' resolution record.

        Tiles made at magnification ``m`` (or ``mpp``, read as ``10 / mpp``) with
        ``tile_size_px`` pixels and resized to the model's ``image_size`` reach the model at
        ``m * image_size / tile_size_px``: a 256-px tile at x10 given to a 224-px model is seen
        at x8.75. None when the record has no resolution.

        Example:
            >>> base = {"model": "m", "classes": ["a", "b"], "in_chans": 3,
            ...     "image_size": 224, "mean": [0.5] * 3, "std": [0.25] * 3}
            >>> ModelSpec.from_dict(
            ...     {**base, "preprocessing": {"mpp": 1.0, "size": 256}}).input_magnification
            8.75
            >>> ModelSpec.from_dict(
            ...     {**base, "preprocessing": {"magnification": 20}}).input_magnification
            20.0
        """
        if self.tile_magnification is not None:
            magnification = self.tile_magnification
        elif self.tile_mpp is not None and self.tile_mpp > 0:
            magnification = 10.0 / self.tile_mpp
        else:
            return None
        if self.tile_size_px:
            magnification *= self.image_size / self.tile_size_px
        return round(magnification, 6) if magnification > 0 else None

    def check_for_slides(self, path: str | Path | None = None) -> None:
        """Check the model can classify RGB slide tiles: 3 input channels, at least two
        classes, a square input side of at least 8 px, three-value mean and std.

        Raises:
            OncoscopeError: naming ``path`` and the first check that fails.
        """
        if self.in_chans != 3:
            raise OncoscopeError(
                f"the model takes {self.in_chans}-channel input; slides are RGB (3 channels)",
                path,
            )
        if len(self.classes) < 2:
            raise OncoscopeError("the model has fewer than two classes", path)
        if self.image_size < 8:
            raise OncoscopeError(
                f"the model's input size {self.image_size!r} is not a square side >= 8", path
            )
        if len(self.mean) != 3 or len(self.std) != 3:
            raise OncoscopeError("the checkpoint's mean/std are not three RGB values", path)

    def eval_transform(self) -> v2.Transform:
        """One ``(C, H, W) uint8`` image -> the model's normalised ``(C, image_size,
        image_size) float32`` input: resize (antialiased), scale to 0..1, normalise with
        ``mean``/``std``. Gives what :meth:`prepare` gives for the same image."""
        from torchvision.transforms import v2  # torchvision's import costs seconds: when used

        return v2.Compose(
            [
                v2.Resize((self.image_size, self.image_size), antialias=True),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(self.mean), list(self.std)),
            ]
        )

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch of images -> the model's normalised float32 input, on the batch's device.

        Args:
            batch: ``(N, in_chans, H, W)``, uint8 (0..255) or float (0..1), any memory format
                (a channels-last batch stays channels-last). Resized (antialiased, as
                :meth:`eval_transform`) when ``H, W`` is not ``image_size``.

        Returns:
            ``(N, in_chans, image_size, image_size)`` float32 ``(x - mean) / std`` with ``x``
            in 0..1; mean and std are cached per device.

        Raises:
            InvalidOptionError: a batch that is not 4-D with ``in_chans`` channels.
        """
        if batch.ndim != 4 or batch.shape[1] != self.in_chans:
            raise InvalidOptionError(
                f"the model takes (N, {self.in_chans}, H, W) batches, got {tuple(batch.shape)}"
            )
        if tuple(batch.shape[-2:]) != (self.image_size, self.image_size):
            from torchvision.transforms.v2.functional import resize

            batch = resize(batch, [self.image_size, self.image_size], antialias=True)
        x = batch.to(torch.float32)  # as torchvision's to_dtype(..., scale=True): x * (1 / max)
        if not batch.is_floating_point():
            x = x.mul_(1.0 / torch.iinfo(batch.dtype).max)
        mean, std = self._device_stats(x.device)
        normalised: torch.Tensor = (x - mean) / std
        return normalised

    def _device_stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        stats = self._stats.get(device)
        if stats is None:
            shape = (1, self.in_chans, 1, 1)
            stats = (
                torch.tensor(self.mean, dtype=torch.float32, device=device).view(shape),
                torch.tensor(self.std, dtype=torch.float32, device=device).view(shape),
            )
            self._stats[device] = stats
        return stats


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise OncoscopeError(f"{name} {value!r} is not a whole number")
    return int(value)


def _number_or_none(value: Any) -> float | None:
    if value is None or value == "":
        return None
    number = float(value)
    return None if number != number else number  # NaN: an empty manifest cell


def _size_or_none(value: Any, name: str) -> int | None:
    number = _number_or_none(value)
    return None if number is None else _integer(number, name)


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _windows(made: Mapping[str, Any]) -> tuple[HUWindow, ...]:
    """The CT windows of a preprocessing record: ``window_hu`` (HU values as recorded), else
    the names of ``window`` parsed (presets or ``W/L``)."""
    recorded = made.get("window_hu")
    if recorded:
        return tuple(
            HUWindow(str(w["name"]), float(w["low_hu"]), float(w["high_hu"])) for w in recorded
        )
    names = made.get("window")
    if not isinstance(names, str) or not names.strip():
        return ()
    try:
        return parse_windows(names)
    except InvalidOptionError:
        return ()
