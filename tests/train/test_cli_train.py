"""``oncoscope train`` on the command line: what it says about a run folder already in use."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import torch
from typer.testing import CliRunner

from oncoscope.cli import app
from tests.train.conftest import write_patches

runner = CliRunner()


def _args(manifest: Path, out: Path, *extra: str) -> list[str]:
    common = ["--epochs", "1", "--workers", "0", "--precision", "fp32", "--out", str(out)]
    return ["train", "--data", str(manifest), "--model", "simple_cnn", *common, *extra]


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_a_second_train_into_one_folder_is_refused_in_one_line(tmp_path):
    manifest = write_patches(tmp_path / "p", {"train": 8, "val": 4})
    run = tmp_path / "run"
    assert runner.invoke(app, _args(manifest, run)).exit_code == 0
    best = (run / "checkpoints" / "best.ckpt").read_bytes()
    again = runner.invoke(app, _args(manifest, run, "--lr", "0.01"))
    assert again.exit_code == 2
    (line,) = _errors(again.output)
    assert line.startswith(f"error: {run}: ") and "--resume" in line and "--overwrite" in line
    assert (run / "checkpoints" / "best.ckpt").read_bytes() == best
    both = runner.invoke(app, _args(manifest, run, "--resume", "--overwrite"))
    assert both.exit_code == 2 and len(_errors(both.output)) == 1
    replaced = runner.invoke(app, _args(manifest, run, "--lr", "0.01", "--overwrite"))
    assert replaced.exit_code == 0, replaced.output
    assert f"replacing the run in {run}" in replaced.output
    assert "lr: 0.01" in (run / "config.yaml").read_text()


def test_every_model_folder_is_checked_before_the_first_model_trains(tmp_path):
    manifest = write_patches(tmp_path / "p", {"train": 8, "val": 4})
    out = tmp_path / "runs"
    (out / "test_resnet").mkdir(parents=True)
    (out / "test_resnet" / "notes.txt").write_text("mine")
    result = runner.invoke(
        app, _args(manifest, out, "--model", "simple_cnn,test_resnet", "--overwrite")
    )
    assert result.exit_code == 2
    (line,) = _errors(result.output)
    assert line.startswith(f"error: {out / 'test_resnet'}: ") and "notes.txt" in line
    assert not (out / "simple_cnn").exists()


def test_check_images_finds_an_unreadable_image_the_sample_misses(tmp_path, monkeypatch):
    import oncoscope.train.data as training_data
    from tests.train.test_data import truncate

    manifest = write_patches(tmp_path / "p", {"train": 8, "val": 4})
    bad = truncate(tmp_path / "p" / "train_006.png")
    monkeypatch.setattr(training_data, "DECODE_SAMPLE", 0)
    result = runner.invoke(app, _args(manifest, tmp_path / "run", "--check-images"))
    assert result.exit_code == 2
    (line,) = _errors(result.output)
    assert line.startswith(f"error: {bad}: cannot decode image")
    assert not (tmp_path / "run").exists()


def test_two_training_processes_make_one_run_and_replace_it_with_overwrite(tmp_path):
    """``--devices 2`` on the CPU: Lightning re-runs the command in a second process (gloo),
    which must neither refuse nor remove the run folder rank 0 has just started. Each process
    trains on its half of the 9 training images (5 each, one repeated), so an epoch is
    ceil(5 / 4) = 2 steps of batch 4 where one process takes ceil(9 / 4) = 3; only rank 0
    writes and speaks. The replacing run holds all but the class head for its first epoch
    (``freeze_epochs``), which DDP, waiting for every parameter's gradient, must allow."""
    manifest = write_patches(tmp_path / "p", {"train": 9, "val": 4})
    run = tmp_path / "run"
    epochs, batch = 2, 4
    command = [sys.executable, "-m", "oncoscope", *_args(manifest, run)]
    command[command.index("--epochs") + 1] = str(epochs)
    command += ["--batch-size", str(batch), "--devices", "2", "--strategy", "ddp"]
    freeze = tmp_path / "freeze.yaml"
    freeze.write_text("freeze_epochs: 1\n")
    for extra in ([], ["--lr", "0.01", "--config", str(freeze), "--overwrite"]):
        done = subprocess.run(
            [*command, *extra], capture_output=True, text=True, timeout=300, check=False
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-2000:]
        assert "MEMBER: 2/2" in output  # two processes really ran
        assert output.count("simple_cnn: 2 epochs") == 1
        last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert last["global_step"] == epochs * math.ceil(math.ceil(9 / 2) / batch)
        assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "run.json").is_file()
        with (run / "metrics.csv").open() as handle:
            assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1"]
    assert "freeze_epochs: 1" in (run / "config.yaml").read_text()


def test_every_models_pretrained_weights_are_found_before_the_first_model_trains(
    tmp_path, monkeypatch
):
    import huggingface_hub
    import huggingface_hub.constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    asked: list[tuple[str, str]] = []

    def no_hub(repo_id: str, filename: str, **_: object) -> str:
        asked.append((repo_id, filename))
        raise LocalEntryNotFoundError("not cached, hub unreachable")  # offline, as here

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    manifest = write_patches(tmp_path / "p", {"train": 8, "val": 4})
    out = tmp_path / "runs"
    # Lite0's weights ship in a package; test_resnet's are on timm's hub only
    result = runner.invoke(
        app, _args(manifest, out, "--model", "efficientnet_lite0,test_resnet", "--pretrained")
    )
    assert result.exit_code == 2
    (line,) = _errors(result.output)
    assert line.startswith(
        "error: test_resnet: no pretrained weights for test_resnet offline and none from "
        "timm's hub (LocalEntryNotFoundError); "
    )
    assert "--weights FILE" in line and "pretrained: if-available" in line
    assert asked == [("timm/test_resnet.r160_in1k", "model.safetensors")]
    assert not out.exists()  # Lite0 did not train first


def test_a_missing_weights_file_is_refused_before_training(tmp_path):
    manifest = write_patches(tmp_path / "p", {"train": 8, "val": 4})
    missing = tmp_path / "lite0.pth"
    result = runner.invoke(
        app,
        _args(
            manifest,
            tmp_path / "runs",
            "--model",
            "simple_cnn,efficientnet_lite0",
            "--weights",
            str(missing),
        ),
    )
    assert result.exit_code == 2
    (line,) = _errors(result.output)
    assert line == f"error: {missing}: weights file does not exist (--weights)"
    assert not (tmp_path / "runs").exists()


def test_a_run_that_leaves_chance_late_says_so_and_trains_longer(tmp_path):
    # any training accuracy counts as leaving chance, so the 2-epoch run leaves in epoch 0 and
    # must train 2 epochs after it
    manifest = write_patches(tmp_path / "p", {"train": 8, "val": 4})
    options = tmp_path / "after.yaml"
    options.write_text(
        "scheduler: cosine\nepochs_after_chance: 2\nleft_chance_accuracy: 0.000001\n"
    )
    run = tmp_path / "run"
    result = runner.invoke(app, _args(manifest, run, "--config", str(options), "--epochs", "2"))
    assert result.exit_code == 0, result.output
    assert "simple_cnn: 3 epochs (left chance in epoch 0) in " in result.output
    with (run / "metrics.csv").open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1", "2"]
    plain = runner.invoke(app, _args(manifest, tmp_path / "plain", "--scheduler", "step"))
    assert "simple_cnn: 1 epochs in " in plain.output
