"""Shared fixtures: synthetic phantoms (LiTS-style NIfTI) and synthetic slides (no patient data)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from oncoscope.ct.phantom import Phantom, make_phantom, write_lits_pair
from oncoscope.pathology.annotations import write_geojson
from oncoscope.pathology.synthetic import (
    SyntheticSlide,
    default_regions,
    write_synthetic_slide,
)

SMALL_SHAPE = (24, 128, 128)


def pytest_report_header() -> list[str]:
    """The CPU the suite ran on and its bf16 support, so a failure can be placed."""
    import torch

    from oncoscope.hardware import cpu_has_native_bf16, cpu_model

    return [
        f"cpu: {cpu_model()}; native bf16: {cpu_has_native_bf16()}; "
        f"torch {torch.__version__} kernels: {torch.backends.cpu.get_cpu_capability()}"
    ]


SLIDE_WH = (4096, 3072)


@pytest.fixture(scope="session")
def phantom() -> Phantom:
    """One small phantom with a 10 mm and a 30 mm lesion."""
    return make_phantom((10.0, 30.0), shape=SMALL_SHAPE, seed=3)


@pytest.fixture(scope="session")
def lits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five phantom patients in different stored orientations, LiTS naming."""
    folder = tmp_path_factory.mktemp("lits")
    sizes = [(8.0,), (12.0, 30.0), (16.0,), (25.0, 9.0), (14.0,)]
    orientations = ["LPS", "RAS", "LPI", "SLP", "ASL"]
    for pid, (diameters, orientation) in enumerate(zip(sizes, orientations, strict=True)):
        ph = make_phantom(diameters, shape=SMALL_SHAPE, seed=10 + pid)
        write_lits_pair(ph, folder, pid, orientation=orientation)
    return folder


def canonical_ras(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference reader: nibabel's closest-canonical RAS array and affine."""
    image = nib.as_closest_canonical(nib.load(path))
    return np.asanyarray(image.dataobj), image.affine


def radiological(ras_slice: np.ndarray) -> np.ndarray:
    """Show a RAS ``(I, J)`` transverse slice as seen on a PACS screen: anterior up, right left."""
    return ras_slice.T[::-1, ::-1]


@pytest.fixture(scope="session")
def slide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three generic-TIFF slides (``a``, ``b``, ``c``) with GeoJSON beside them."""
    folder = tmp_path_factory.mktemp("slides")
    slide = write_synthetic_slide(folder / "a.tif", SLIDE_WH)
    for name in ("a", "b", "c"):
        if name != "a":
            shutil.copy(slide.path, folder / f"{name}.tif")
        write_geojson(slide.regions, folder / f"{name}.geojson")
    return folder


@pytest.fixture(scope="session")
def generic_slide(slide_dir: Path) -> SyntheticSlide:
    return SyntheticSlide(slide_dir / "a.tif", SLIDE_WH, 0.25, tuple(default_regions(SLIDE_WH)))


@pytest.fixture(scope="session")
def aperio_slide(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSlide:
    folder = tmp_path_factory.mktemp("svs")
    return write_synthetic_slide(folder / "scan.svs", SLIDE_WH, vendor="aperio", mpp=0.2525)


@pytest.fixture(scope="session")
def tray(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three small SYNTHETIC slides of different sizes and tissue (biopsy-like), for runs over
    many slides."""
    folder = tmp_path_factory.mktemp("tray")
    sizes = [(1536, 1152), (1280, 1536), (2048, 1024)]
    return [
        write_synthetic_slide(folder / f"biopsy{i}.tif", size, regions=default_regions(size)).path
        for i, size in enumerate(sizes)
    ]
