"""Two tiny runs trained by one multi-model ``oncoscope train`` on the patch fixture; a
hand-set tiny checkpoint and grey-image manifests for fast evaluate checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from oncoscope.cli import app
from tests.train.conftest import write_patches

MODELS = ("simple_cnn", "mobilenetv3_small_100")


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(manifest, folder holding one run per model in MODELS)."""
    root = tmp_path_factory.mktemp("runs")
    manifest = write_patches(root / "patches", {"train": 24, "val": 12, "test": 16})
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(manifest),
            "--model",
            ",".join(MODELS),
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--precision",
            "fp32",
            "--out",
            str(root / "runs"),
        ],
    )
    assert result.exit_code == 0, result.output
    return manifest, root / "runs"


def write_grey_images(folder: Path, rows: list[dict[str, object]]) -> Path:
    """A manifest of 16x16 grey PNGs (``brightness`` 0-255 per row) for the tiny checkpoint.

    Each row gives ``path``, ``label``, ``split``, ``group`` and ``brightness``; the image is
    filled with ``brightness`` (the tiny model's tumour score grows with it).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        pixels = np.full((16, 16), int(str(row["brightness"])), np.uint8)
        Image.fromarray(pixels).save(folder / str(row["path"]))
    columns = ["path", "label", "split", "group"]
    pd.DataFrame([{c: r[c] for c in columns} for r in rows]).to_csv(
        folder / "manifest.csv", index=False
    )
    return folder / "manifest.csv"


def grey_rows(split: str, groups: int, per_group: int = 2) -> list[dict[str, object]]:
    """``groups`` groups of ``per_group`` images in ``split``; even groups healthy (dark), odd
    groups tumour (bright)."""
    rows: list[dict[str, object]] = []
    for g in range(groups):
        for i in range(per_group):
            tumour = g % 2 == 1
            rows.append(
                {
                    "path": f"{split}-{g}-{i}.png",
                    "label": "tumour" if tumour else "healthy",
                    "split": split,
                    "group": f"{split}-{g}",
                    "brightness": 200 + 10 * i if tumour else 20 + 10 * i,
                }
            )
    return rows


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A hand-set two-class (healthy, tumour) checkpoint on 16x16 grey images: pixels are
    centred on mid-grey, one channel sees bright pixels (tumour), the other dark (healthy)."""
    import torch

    from tests.explain.conftest import TinyGapNet, use_tiny_models

    use_tiny_models(monkeypatch)
    kwargs = {"conv": [1.0, -1.0], "classifier": [[0.0, 8.0], [8.0, 0.0]]}
    model = TinyGapNet(**kwargs)  # type: ignore[arg-type]
    spec = {
        "model": "tiny_gap",
        "model_kwargs": kwargs,
        "classes": ["healthy", "tumour"],
        "in_chans": 1,
        "image_size": 16,
        "mean": [0.5],
        "std": [1.0],
    }
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path / "tiny.ckpt"
    torch.save({"hyper_parameters": {"spec": spec}, "state_dict": state}, path)
    return path
