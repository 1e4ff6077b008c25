"""``oncoscope doctor``: what this installation has (versions, device, offline weights)."""

from __future__ import annotations

import importlib
import platform
from pathlib import Path
from typing import Any

from oncoscope import __version__
from oncoscope.hardware import cpu_has_native_bf16, cpu_model


def _version(module: str, attribute: str = "__version__") -> str:
    try:
        loaded = importlib.import_module(module)
    except Exception as error:  # a broken optional install must not break the report
        return f"not available ({type(error).__name__})"
    return str(getattr(loaded, attribute, "unknown"))


def _openseadragon() -> str:
    from oncoscope.viewer.assets import INSTALL_HINT, openseadragon_version

    return openseadragon_version() or f"not installed (run: {INSTALL_HINT})"


def offline_weights() -> dict[str, list[str]]:
    """Pretrained weight files present on this machine, by source."""
    from oncoscope.models.weights import WEIGHT_PACKAGES

    found: dict[str, list[str]] = {}
    for package in WEIGHT_PACKAGES:
        path = package.path()
        if path is not None:
            found[f"{', '.join(package.architectures)} (package {package.package})"] = [str(path)]
    hub = Path.home() / ".cache" / "huggingface" / "hub"
    timm_models = sorted(p.name.removeprefix("models--timm--") for p in hub.glob("models--timm--*"))
    if timm_models:
        found["timm hub cache"] = timm_models
    torch_hub = Path.home() / ".cache" / "torch" / "hub" / "checkpoints"
    checkpoints = sorted(p.name for p in torch_hub.glob("*.pth"))
    if checkpoints:
        found["torch hub cache"] = checkpoints
    return found


def report() -> dict[str, Any]:
    """Versions, compute device and offline weights, as a JSON-ready dict."""
    versions = {
        "oncoscope": __version__,
        "python": platform.python_version(),
        "torch": _version("torch"),
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "openslide (library)": _version("openslide", "__library_version__"),
        "openslide-python": _version("openslide"),
        "nibabel": _version("nibabel"),
        "SimpleITK": _version("SimpleITK"),
        "pydicom": _version("pydicom"),
        "numpy": _version("numpy"),
        "scikit-image": _version("skimage"),
        "scikit-learn": _version("sklearn"),
        "fastapi (viewer)": _version("fastapi"),
        "openseadragon (viewer)": _openseadragon(),
    }
    device: dict[str, Any] = {
        "cpu": f"{cpu_model()} ({platform.machine()})",
        "cpu_native_bf16": cpu_has_native_bf16(),
    }
    try:
        import torch

        device["cuda"] = torch.cuda.is_available()
        device["devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
        device["torch_threads"] = torch.get_num_threads()
    except Exception as error:  # report, do not fail
        device["cuda"] = False
        device["error"] = f"torch unavailable ({type(error).__name__})"
    device["selected"] = "cuda" if device.get("cuda") else "cpu"
    return {"versions": versions, "device": device, "offline_weights": offline_weights()}
