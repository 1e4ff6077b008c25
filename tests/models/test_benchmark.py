"""Parameters, FLOPs and timing of models, on tiny hand-made models."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import oncoscope.models.benchmark as bench
from oncoscope.cli import app
from oncoscope.errors import UnknownModelError
from oncoscope.models.benchmark import (
    benchmark_models,
    count_flops,
    parameter_count,
    time_forward_ms,
)

runner = CliRunner()


def tiny_model() -> nn.Module:
    # conv 3 -> 4 channels, 3 x 3, padding 1 on 8 x 8; then 4 * 8 * 8 = 256 -> 10.
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(256, 10))


def test_flops_are_twice_the_hand_counted_multiply_adds():
    conv_macs = (4 * 3 * 3 * 3) * (8 * 8)  # weights per output value x output positions
    linear_macs = 256 * 10
    assert count_flops(tiny_model(), torch.zeros(1, 3, 8, 8)) == 2 * (conv_macs + linear_macs)
    assert count_flops(tiny_model(), torch.zeros(2, 3, 8, 8)) == 4 * (conv_macs + linear_macs)


def test_parameter_count_is_every_weight_and_bias():
    assert parameter_count(tiny_model()) == (4 * 3 * 3 * 3 + 4) + (256 * 10 + 10)


def test_latency_is_measured_after_warmup_in_milliseconds():
    ticks = itertools.count(step=0.25)  # every clock reading is 250 ms after the last
    calls = []
    model = lambda x: calls.append(x)  # noqa: E731
    times = time_forward_ms(
        model, torch.zeros(1), iterations=3, warmup=2, clock=lambda: next(ticks)
    )
    assert times == [250.0, 250.0, 250.0]
    assert len(calls) == 5


def test_record_has_the_table_fields(monkeypatch):
    record = benchmark_models(["simple_cnn"], batch_size=2, image_size=32, iterations=1, warmup=0)
    assert record["device"] in {"cpu", "cuda"}
    assert record["batch_size"] == 2 and record["image_size"] == 32
    assert "multiply-add counted as 2" in record["flops_note"]
    (row,) = record["models"]
    assert set(row) == {
        "model",
        "parameters",
        "gflops_per_image",
        "gmacs_per_image",
        "latency_ms",
        "latency_ms_min",
        "throughput_images_per_s",
    }
    assert row["gflops_per_image"] == pytest.approx(2 * row["gmacs_per_image"], rel=1e-6)
    assert row["throughput_images_per_s"] == pytest.approx(2 / (row["latency_ms"] / 1000), rel=1e-2)


def test_an_unknown_model_fails_before_any_model_is_measured(monkeypatch):
    measured = []
    monkeypatch.setattr(bench, "benchmark_model", lambda name, **_: measured.append(name))
    with pytest.raises(UnknownModelError, match="not_a_model_xyz"):
        benchmark_models(["simple_cnn", "not_a_model_xyz"])
    assert measured == []


def test_cli_prints_the_table_and_writes_json(tmp_path):
    target = tmp_path / "bench.json"
    result = runner.invoke(
        app,
        [
            "benchmark-models",
            "simple_cnn",
            "--batch-size",
            "2",
            "--image-size",
            "32",
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--json",
            str(target),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "simple_cnn" in result.output and "GFLOPs/image" in result.output
    record = json.loads(target.read_text())
    from oncoscope.models import create_model

    model = create_model("simple_cnn", num_classes=2, in_chans=3, input_size=32)
    assert record["models"][0]["parameters"] == sum(p.numel() for p in model.parameters())


def test_cli_rejects_an_unknown_model():
    result = runner.invoke(app, ["benchmark-models", "resnet50,not_a_model_xyz"])
    assert result.exit_code == 2
    assert "not_a_model_xyz" in result.output


def test_cli_prints_the_papers_count_beside_the_measured_one(monkeypatch):
    from oncoscope.models import count_parameters

    def measured(name, **_):  # the count only: the paper-size model is slow on 2 cores
        return bench.ModelBenchmark(name, count_parameters(name, num_classes=2), 1, 0.5, 1, 1, 1)

    monkeypatch.setattr(bench, "benchmark_model", measured)
    result = runner.invoke(
        app, ["benchmark-models", "sa_efficientnet,simple_cnn", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    table = [line for line in result.output.splitlines() if "│" in line]
    (row,) = [line for line in table if "sa_efficientnet" in line]
    cells = [cell.strip() for cell in row.split("│") if cell.strip()]
    assert cells[0] == "sa_efficientnet" and cells[2] == "74.6"
    assert abs(float(cells[1]) - 74.6) < 0.03 * 74.6
    (cnn,) = [line for line in table if "simple_cnn" in line]
    assert "74.6" not in cnn and "Table II" in result.output
