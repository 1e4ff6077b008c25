"""Two tiny runs trained by one multi-model ``oncoscope train`` on the patch fixture."""

from __future__ import annotations

from pathlib import Path

import pytest
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
            "32",
            "--out",
            str(root / "runs"),
        ],
    )
    assert result.exit_code == 0, result.output
    return manifest, root / "runs"
