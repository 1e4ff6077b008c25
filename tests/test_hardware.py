"""One precision vocabulary and one hardware probe, below the library's layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import oncoscope.hardware as hardware
from oncoscope.errors import InvalidOptionError
from oncoscope.hardware import normalize_precision, resolve_precision
from oncoscope.train.config import TrainConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "oncoscope"


@pytest.mark.parametrize(
    ("given", "expected"),
    [("32", "fp32"), ("16", "fp16"), ("32-true", "fp32"), ("bf16-mixed", "bf16")],
)
def test_earlier_spellings_are_read_with_a_note(given, expected):
    with pytest.warns(FutureWarning, match=f"use {expected}"):
        assert normalize_precision(given) == expected


def test_an_unknown_precision_is_one_line_naming_the_choices():
    with pytest.raises(InvalidOptionError, match="auto, fp32, bf16, fp16"):
        resolve_precision("fp8")


def test_auto_is_bf16_only_where_the_cpu_has_it(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"  # asked for: given, native or not


def test_a_train_config_with_an_earlier_spelling_stores_the_new_one(tmp_path):
    with pytest.warns(FutureWarning):
        config = TrainConfig.model_validate(
            {"data": tmp_path / "m.csv", "out": tmp_path / "r", "precision": 32}
        )
    assert config.precision == "fp32"
    assert "precision: fp32" in config.to_yaml()


def test_no_library_module_imports_the_cli_the_viewer_the_demo_or_doctor():
    allowed = {"cli", "viewer", "demo.py", "doctor.py", "__main__.py"}
    front = ("oncoscope.cli", "oncoscope.viewer", "oncoscope.demo", "oncoscope.doctor")
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.relative_to(SRC).parts[0] in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n == f or n.startswith(f + ".") for n in names for f in front):
                offenders.append(str(path.relative_to(SRC)))
    assert offenders == []
