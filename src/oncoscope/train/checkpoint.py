"""Read oncoscope checkpoints safely and rebuild the trained model from one file.

A checkpoint carries the model name and kwargs, the class names, input size and channels, the
normalisation and the preprocessing the images were made with, so every later command needs
only the checkpoint. Files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from oncoscope.errors import CorruptFileError, OncoscopeError
from oncoscope.models import create_model


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``{"spec": ..., "optim": ..., "state_dict": ..., "epoch": ...}`` of a checkpoint.

    Raises:
        OncoscopeError: missing file, or a file that is not an oncoscope training checkpoint.
        CorruptFileError: a file torch cannot read with ``weights_only=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise OncoscopeError("checkpoint does not exist", path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for bad or unsafe files
        raise CorruptFileError(f"cannot read checkpoint ({type(error).__name__})", path) from None
    hparams = raw.get("hyper_parameters", {}) if isinstance(raw, dict) else {}
    if "spec" not in hparams or "state_dict" not in raw:
        raise OncoscopeError("not an oncoscope training checkpoint (no model spec)", path)
    return {
        "spec": hparams["spec"],
        "optim": hparams.get("optim", {}),
        "state_dict": raw["state_dict"],
        "epoch": raw.get("epoch"),
    }


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained network from a checkpoint, in eval mode, with its spec.

    Raises:
        OncoscopeError: see :func:`read_checkpoint`; weights that do not fit the model named.
    """
    checkpoint = read_checkpoint(path)
    spec = checkpoint["spec"]
    model = create_model(
        spec["model"],
        num_classes=len(spec["classes"]),
        in_chans=spec["in_chans"],
        **spec["model_kwargs"],
    )
    weights = {
        k.removeprefix("model."): v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith("model.")
    }
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise OncoscopeError(
            f"weights do not fit model {spec['model']} ({str(error).splitlines()[0][:160]})",
            path,
        ) from None
    return model.eval(), spec


def write_checkpoint(model: nn.Module, spec: dict[str, Any], path: str | Path) -> Path:
    """Write a model and its spec as an oncoscope checkpoint that :func:`load_model` reads.

    For models made outside ``oncoscope train`` (benchmarks, hand-built test models); ``spec``
    needs the keys :func:`load_model` uses (``model``, ``model_kwargs``, ``classes``,
    ``in_chans``) and those later commands read (``image_size``, ``mean``, ``std``).
    """
    from oncoscope.io.atomic import atomic_path

    path = Path(path)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    with atomic_path(path) as temporary:
        torch.save(
            {"hyper_parameters": {"spec": spec, "optim": {}}, "state_dict": state, "epoch": None},
            temporary,
        )
    return path


def input_magnification(spec: dict[str, Any]) -> float | None:
    """The magnification of what the model sees, from the checkpoint's preprocessing record.

    Tiles made at magnification ``m`` (or ``mpp``) with ``size`` pixels and resized to the
    model's ``image_size`` reach the model at ``m * image_size / size``: a 256-px tile at x10
    given to a 224-px model is seen at x8.75. ``None`` when the record has no resolution.

    Example:
        >>> input_magnification({"image_size": 224, "preprocessing": {"mpp": 1.0, "size": 256}})
        8.75
        >>> input_magnification({"image_size": 224, "preprocessing": {"magnification": 20}})
        20.0
    """
    made_with = spec.get("preprocessing") or {}
    try:
        if made_with.get("magnification") is not None:
            magnification = float(made_with["magnification"])
        elif made_with.get("mpp") is not None:
            magnification = 10.0 / float(made_with["mpp"])
        else:
            return None
        size, image_size = made_with.get("size"), spec.get("image_size")
        if size and image_size:
            magnification *= float(image_size) / float(size)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return round(magnification, 6) if magnification > 0 else None
