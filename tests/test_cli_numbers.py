"""Numeric options are checked when the command line is parsed: NaN, infinities, zero and
negative sizes or resolutions are usage errors (exit code 2) naming the option, before any
file is read or written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from oncoscope.cli import app

# Inputs that do not exist: the options must be refused before anything is opened.
COMMANDS = {
    "slide": ["slide", "missing.ckpt", "missing.tif"],
    "scale": ["scale", "missing.ckpt", "missing.tif"],
    "wsi tile": ["wsi", "tile", "missing.tif"],
}
POSITIVE = [
    ("slide", "--mpp"),
    ("slide", "--magnification"),
    ("slide", "--mpp-of-scan"),
    ("slide", "--magnification-of-scan"),
    ("scale", "--mpp-of-scan"),
    ("scale", "--magnification-of-scan"),
    ("wsi tile", "--mpp"),
    ("wsi tile", "--magnification"),
    ("wsi tile", "--mpp-of-scan"),
    ("wsi tile", "--magnification-of-scan"),
]


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args)
    return result.exit_code, " ".join(result.output.replace("│", " ").split())  # unboxed


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-2"])
@pytest.mark.parametrize(("command", "option"), POSITIVE)
def test_a_size_or_resolution_must_be_a_finite_number_above_zero(
    command: str, option: str, value: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, output = _run([*COMMANDS[command], "--out", str(out), option, value])
    assert code == 2, output
    assert f"Invalid value for '{option}'" in output
    assert "must be a finite number above 0" in output
    assert not out.exists()


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        *(("slide", "--stride", v) for v in ("nan", "inf", "0", "-0.5", "2")),
        ("slide", "--min-tissue", "nan"),
        ("wsi tile", "--overlap", "nan"),
        ("wsi tile", "--min-coverage", "inf"),
    ],
)
def test_bounded_options_refuse_values_outside_their_range(
    command: str, option: str, value: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, output = _run([*COMMANDS[command], "--out", str(out), option, value])
    assert code == 2, output
    assert f"Invalid value for '{option}'" in output
    assert not out.exists()


def test_a_valid_number_still_passes() -> None:
    code, output = _run([*COMMANDS["slide"], "--out", "unused", "--mpp", "0.5", "--stride", "1"])
    assert "Invalid value" not in output
    assert code == 2 and "does not exist" in output  # it went on to the (missing) inputs


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--data", "m.csv", "--out", "r", "--lr", "nan"],
        ["train", "--data", "m.csv", "--out", "r", "--lr", "0"],
        ["ct", "prepare", "v", "--out", "o", "--small-mm", "inf"],
        ["ct", "segment-em", "v.nii.gz", "--out", "o", "--min-area-mm2", "nan"],
        ["evaluate", "c.ckpt", "--data", "m.csv", "--out", "o", "--target-sensitivity", "nan"],
    ],
)
def test_other_numeric_options_refuse_nan_and_infinities(args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "Invalid value for" in result.output  # refused at parse time, before any file is read
