"""Read oncoscope checkpoints safely and rebuild the trained model from one file.

A checkpoint carries the model's :class:`~oncoscope.models.spec.ModelSpec` (model name and
kwargs, class names, input size and channels, the normalisation and the preprocessing the
images were made with) as plain values under ``hyper_parameters["spec"]``, so every later
command needs only the checkpoint. Files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from oncoscope.errors import CorruptFileError, OncoscopeError, UnknownModelError
from oncoscope.models import create_model
from oncoscope.models.registry import REMOVED_MODELS
from oncoscope.models.spec import ModelSpec


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


#: A model rebuilt from a checkpoint, in eval mode, with its spec (:func:`load_model`).
LoadedModel = tuple[nn.Module, ModelSpec]


def read_spec(path: str | Path) -> ModelSpec:
    """The :class:`~oncoscope.models.spec.ModelSpec` of a checkpoint, without building the model.

    Raises:
        OncoscopeError: see :func:`read_checkpoint`; a spec without a required field.
    """
    return ModelSpec.from_dict(read_checkpoint(path)["spec"], path)


def load_model(path: str | Path) -> LoadedModel:
    """Rebuild the trained network from a checkpoint, in eval mode, with its spec.

    The file is read once; pass the result down to everything else that needs the model or
    its spec rather than reading the file again.

    Raises:
        OncoscopeError: see :func:`read_checkpoint`; a spec without a required field; weights
            that do not fit the model named.
    """
    return model_from_checkpoint(read_checkpoint(path), path)


def model_from_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> LoadedModel:
    """The network and spec of a checkpoint already read (:func:`read_checkpoint`), for a
    command that looks at the stored spec before it builds the model (``path`` is named in
    errors).

    Raises:
        OncoscopeError: a spec without a required field; weights that do not fit the model.
    """
    spec = ModelSpec.from_dict(checkpoint["spec"], path)
    if spec.model == "sa_efficientnet" and "model.front.embed.0.weight" in checkpoint["state_dict"]:
        # saved before issue 14 gave the name to the paper's model: the residual variant's keys
        raise UnknownModelError(
            "this checkpoint holds the residual SA-EfficientNet that 'sa_efficientnet' named "
            f"before issue 14; {REMOVED_MODELS['sa_residual_efficientnet']}",
            path,
        )
    try:
        model = create_model(
            spec.model,
            num_classes=len(spec.classes),
            in_chans=spec.in_chans,
            **spec.model_kwargs,
        )
    except UnknownModelError as error:  # a model this version does not build: name the file
        raise UnknownModelError(error.message, path) from None
    load_module_weights(model, checkpoint["state_dict"], f"model {spec.model}", path)
    return model.eval(), spec


def load_module_weights(
    model: nn.Module, state_dict: dict[str, Any], name: str, path: str | Path
) -> None:
    """Load the ``model.``-prefixed weights of a Lightning checkpoint's ``state_dict`` into
    ``model`` (the module the LightningModule held as ``self.model``).

    Raises:
        OncoscopeError: weights that do not fit ``model`` (``name`` and ``path`` named).
    """
    weights = {k.removeprefix("model."): v for k, v in state_dict.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise OncoscopeError(
            f"weights do not fit {name} ({str(error).splitlines()[0][:160]})", path
        ) from None


def write_checkpoint(model: nn.Module, spec: ModelSpec | dict[str, Any], path: str | Path) -> Path:
    """Write a model and its spec as an oncoscope checkpoint that :func:`load_model` reads.

    For models made outside ``oncoscope train`` (benchmarks, hand-built test models). A
    ``spec`` given as a dict is checked (:meth:`ModelSpec.from_dict`) and stored as given.

    Raises:
        OncoscopeError: a spec without a required field.
    """
    from oncoscope.io.atomic import atomic_path

    path = Path(path)
    stored = spec.to_dict() if isinstance(spec, ModelSpec) else dict(spec)
    ModelSpec.from_dict(stored, path)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    with atomic_path(path) as temporary:
        torch.save(
            {"hyper_parameters": {"spec": stored, "optim": {}}, "state_dict": state, "epoch": None},
            temporary,
        )
    return path
