"""Each command reads each checkpoint file once (``torch.load`` counted), whatever it does."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from oncoscope.cli import app
from tests.evaluate.conftest import grey_rows, write_grey_images

runner = CliRunner()


def count_loads(monkeypatch: pytest.MonkeyPatch) -> Counter[Path]:
    """Count ``torch.load`` calls per file, from now on."""
    loads: Counter[Path] = Counter()
    original = torch.load

    def counting(f: Any, *args: Any, **kwargs: Any) -> Any:
        loads[Path(f).resolve()] += 1
        return original(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    return loads


def test_evaluate_reads_the_checkpoint_once(tiny_checkpoint, tmp_path, monkeypatch):
    manifest = write_grey_images(tmp_path / "d", grey_rows("val", 4) + grey_rows("test", 4))
    loads = count_loads(monkeypatch)
    result = runner.invoke(
        app,
        ["evaluate", str(tiny_checkpoint), "--data", str(manifest), "--out",
         str(tmp_path / "out"), "--resamples", "20"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "metrics.json").is_file()  # it predicted test and val
    assert loads == {tiny_checkpoint.resolve(): 1}


def test_compare_reads_each_checkpoint_once(tiny_checkpoint, tmp_path, monkeypatch):
    manifest = write_grey_images(tmp_path / "d", grey_rows("val", 4) + grey_rows("test", 4))
    other = tmp_path / "other.ckpt"
    shutil.copy(tiny_checkpoint, other)
    loads = count_loads(monkeypatch)
    result = runner.invoke(
        app,
        ["compare", str(tiny_checkpoint), str(other), "--data", str(manifest),
         "--out", str(tmp_path / "cmp"), "--resamples", "20"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert loads == {tiny_checkpoint.resolve(): 1, other.resolve(): 1}


def test_explain_reads_the_checkpoint_once(tiny_checkpoint, tmp_path, monkeypatch):
    manifest = write_grey_images(tmp_path / "d", grey_rows("test", 2))
    loads = count_loads(monkeypatch)
    result = runner.invoke(
        app,
        ["explain", str(tiny_checkpoint), "--data", str(manifest), "--split", "test",
         "--out", str(tmp_path / "x")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x" / "explain.csv").is_file()
    assert loads == {tiny_checkpoint.resolve(): 1}
