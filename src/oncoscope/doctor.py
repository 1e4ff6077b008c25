"""``oncoscope doctor``: what this installation has (versions, device, offline weights).

Versions are read from the installed distributions' metadata (:mod:`importlib.metadata`), so
that the report imports neither timm nor Lightning; torch is imported, for the device it sees
and its exact build (``2.x.y+cu...``), and OpenSlide, for the C library's version.
"""

from __future__ import annotations

import importlib
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from oncoscope import __version__
from oncoscope.allocator import large_blocks_kept
from oncoscope.hardware import cpu_has_native_bf16, cpu_model

#: What the report names, and the distribution each version is read from.
DISTRIBUTIONS = {
    "torchvision": "torchvision",
    "timm": "timm",
    "openslide-python": "openslide-python",
    "nibabel": "nibabel",
    "SimpleITK": "SimpleITK",
    "pydicom": "pydicom",
    "numpy": "numpy",
    "scikit-image": "scikit-image",
    "scikit-learn": "scikit-learn",
    "fastapi (viewer)": "fastapi",
}


def _installed(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def _attribute(module: str, attribute: str) -> str:
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


def _device() -> tuple[str, dict[str, Any]]:
    """torch's version and the compute device it sees (a broken torch is reported, not raised)."""
    device: dict[str, Any] = {
        "cpu": f"{cpu_model()} ({platform.machine()})",
        "cpu_native_bf16": cpu_has_native_bf16(),
        "glibc_large_blocks_kept": large_blocks_kept(),
    }
    try:
        import torch

        device["cuda"] = torch.cuda.is_available()
        device["devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
        device["torch_threads"] = torch.get_num_threads()
        torch_version = str(torch.__version__)
    except Exception as error:  # report, do not fail
        device["cuda"] = False
        device["error"] = f"torch unavailable ({type(error).__name__})"
        torch_version = f"not available ({type(error).__name__})"
    device["selected"] = "cuda" if device.get("cuda") else "cpu"
    return torch_version, device


def report() -> dict[str, Any]:
    """Versions, compute device and offline weights, as a JSON-ready dict."""
    torch_version, device = _device()
    versions = {
        "oncoscope": __version__,
        "python": platform.python_version(),
        "torch": torch_version,
        "openslide (library)": _attribute("openslide", "__library_version__"),
        **{name: _installed(distribution) for name, distribution in DISTRIBUTIONS.items()},
        "openseadragon (viewer)": _openseadragon(),
    }
    return {"versions": versions, "device": device, "offline_weights": offline_weights()}
