#!/usr/bin/env bash
# Build the separate virtual environment for the TIAToolbox anchor of benchmarks/slide_throughput.py.
#
# TIAToolbox 2.1.3 pins torch<2.13 / torchvision<0.28; this machine's pip caps torch at the wheels
# in its local cache (2.14.1 / 0.29.1), so TIAToolbox goes in with --no-deps and its runtime
# requirements follow with TIAToolbox's own version ranges, torch and torchvision left to pip.
# Only what `tiatoolbox.models.engine.patch_predictor.PatchPredictor` imports is installed
# (no jupyterlab, sphinx, bokeh, flask, s3fs: the notebook, docs and tile-server extras).
# Idempotent: rerunning reuses the venv and pip skips what is already satisfied.
#
# Usage: bash benchmarks/tiatoolbox_venv.sh [VENV_DIR]    (default /work/tia-venv)
set -euo pipefail

venv="${1:-/work/tia-venv}"
[ -x "$venv/bin/python" ] || python3.11 -m venv "$venv"
pip=("$venv/bin/pip" install --quiet)

"${pip[@]}" --no-deps "tiatoolbox==2.1.3"
"${pip[@]}" torch torchvision \
  "timm>=1.0.3,<1.0.28" \
  "numpy>=2.0.0,<2.4.4" \
  "opencv-python>=4.6.0,<5.0.0" \
  "openslide-python>=1.4.0,<1.4.6" \
  "openslide-bin>=4.0.0.2,<4.0.1.2" \
  "zarr>=3.0.8,<3.2.0" \
  "dask>=2026.1.2,<2026.7.1" \
  "tifffile>=2025.5.21,<2026.3.3" \
  "imagecodecs>=2022.9.26,<2026.3.6" \
  "glymur>=0.12.7,<0.14.8" \
  "scikit-image>=0.26.0,<0.26.1" \
  "scikit-learn>=1.2.0,<1.9.0" \
  "scipy>=1.8,<1.17.1" \
  "shapely>=2.0.0,<=2.1.2" \
  "pandas>=2.0.0,<3.0.3" \
  "pillow>=9.3.0,<12.2.0" \
  "pyyaml>=6.0,<6.0.3" \
  "tqdm>=4.64.1,<4.69.0" \
  "requests>=2.28.1,<2.34.2" \
  "matplotlib>=3.10.0,<3.11.1" \
  "defusedxml==0.7.1" \
  "joblib>=1.1.1,<1.5.3" \
  "numba>=0.57.0,<0.66.0" \
  "umap-learn>=0.5.3,<0.5.12" \
  "SimpleITK>=2.2.1,<2.5.5" \
  "pydicom>=2.3.1,<3.0.2" \
  "wsidicom>=0.18.0,<0.34.0" \
  "transformers>=4.51.1,<5.14.1" \
  "huggingface_hub>=0.33.3,<1.24.0" \
  "filelock>=3.9.0,<3.29.0" \
  "Click>=8.2.0,<8.4.2" \
  psutil

# psutil is imported by tiatoolbox.utils.misc but reaches the full install only through jupyterlab.
"$venv/bin/python" -c "
import tiatoolbox, torch
from tiatoolbox.models.engine.patch_predictor import PatchPredictor
print('tiatoolbox', tiatoolbox.__version__, 'torch', torch.__version__)
"
