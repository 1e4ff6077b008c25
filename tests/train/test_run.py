from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest
import torch

import oncoscope.train.data as training_data
from oncoscope.errors import CorruptFileError, InvalidOptionError, OncoscopeError
from oncoscope.hardware import resolve_precision
from oncoscope.train.checkpoint import load_model, read_checkpoint
from oncoscope.train.config import resolve_config
from oncoscope.train.predict import predict_split
from oncoscope.train.run import train, training_device


def _config(patches, out, **extra):
    return resolve_config(
        overrides={
            "data": patches,
            "out": out,
            "model": "simple_cnn",
            "num_workers": 0,
            "precision": "fp32",
            **extra,
        }
    )


def test_a_run_leaves_checkpoints_history_and_config(patches, tmp_path):
    result = train(_config(patches, tmp_path / "run", epochs=3), progress_bar=False)
    assert result.best_checkpoint == tmp_path / "run" / "checkpoints" / "best.ckpt"
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "run" / "config.yaml").read_text().count("simple_cnn") == 1
    with (tmp_path / "run" / "metrics.csv").open() as handle:
        history = list(csv.DictReader(handle))
    assert [row["epoch"] for row in history] == ["0", "1", "2"]
    assert all(float(row["val_loss"]) > 0 and row["train_acc"] for row in history)
    # the checkpoint loads safely and is enough to rebuild and feed the model
    raw = torch.load(result.best_checkpoint, weights_only=True, map_location="cpu")
    spec = raw["hyper_parameters"]["spec"]
    assert spec["classes"] == ["adenoma", "well differentiated"]
    assert (spec["model"], spec["in_chans"], spec["image_size"]) == ("simple_cnn", 3, 64)
    model, _ = load_model(result.best_checkpoint)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 2)


def test_the_model_learns_the_patches(patches, tmp_path):
    result = train(_config(patches, tmp_path / "run", epochs=6), progress_bar=False)
    predictions = predict_split(result.best_checkpoint, patches, "test")
    assert (predictions["pred"] == predictions["label"]).mean() >= 0.9
    assert predictions.filter(like="prob_").sum(axis=1).round(5).eq(1).all()


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(patches, tmp_path, workers):
    config = {"num_workers": workers, "dropout": 0.3}
    train(_config(patches, tmp_path / "full", epochs=3, **config), progress_bar=False)
    train(_config(patches, tmp_path / "part", epochs=1, **config), progress_bar=False)
    train(_config(patches, tmp_path / "part", epochs=3, **config), resume=True, progress_bar=False)
    full = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")["state_dict"]
    part = read_checkpoint(tmp_path / "part" / "checkpoints" / "last.ckpt")["state_dict"]
    assert full.keys() == part.keys()
    for key in full:
        torch.testing.assert_close(part[key], full[key], rtol=0, atol=0)
    with (tmp_path / "part" / "metrics.csv").open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1", "2"]


def test_resume_refuses_another_model_or_a_missing_checkpoint(patches, tmp_path):
    with pytest.raises(OncoscopeError, match=r"no last\.ckpt"):
        train(_config(patches, tmp_path / "none"), resume=True, progress_bar=False)
    train(_config(patches, tmp_path / "run", epochs=1), progress_bar=False)
    with pytest.raises(OncoscopeError, match="checkpoint is for model simple_cnn"):
        train(_config(patches, tmp_path / "run", model="resnet18"), resume=True, progress_bar=False)


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def _epoch(checkpoint: Path) -> int:
    return int(torch.load(checkpoint, weights_only=True, map_location="cpu")["epoch"])


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_last_checkpoint_holds_the_last_epoch_and_best_the_lowest_val_loss(flipped, tmp_path):
    run = tmp_path / "run"
    train(_config(flipped, run, epochs=3, batch_size=8), progress_bar=False)
    losses = [float(row["val_loss"]) for row in _history(run)]
    best = losses.index(min(losses))
    assert best < 2  # the flipped val labels make the last epoch worse than the best one
    assert _epoch(run / "checkpoints" / "last.ckpt") == 2
    assert _epoch(run / "checkpoints" / "best.ckpt") == best


def test_a_moved_run_keeps_its_best_checkpoint_when_resumed(flipped, tmp_path):
    train(_config(flipped, tmp_path / "a", epochs=2, batch_size=8), progress_bar=False)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")  # moved, not copied: nothing may point back to it
    result = train(
        _config(flipped, tmp_path / "b", epochs=3, batch_size=8), resume=True, progress_bar=False
    )
    losses = [float(row["val_loss"]) for row in _history(tmp_path / "b")]
    best = losses.index(min(losses))
    assert best < 2 and len(losses) == 3
    assert result.best_checkpoint == tmp_path / "b" / "checkpoints" / "best.ckpt"
    assert _epoch(result.best_checkpoint) == best
    assert result.best_val_loss == pytest.approx(min(losses), rel=1e-5)
    assert _epoch(tmp_path / "b" / "checkpoints" / "last.ckpt") == 2


def test_a_copied_run_resumes_without_touching_the_original(flipped, tmp_path):
    train(_config(flipped, tmp_path / "a", epochs=2, batch_size=8), progress_bar=False)
    original = _files(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    train(_config(flipped, tmp_path / "b", epochs=3, batch_size=8), resume=True, progress_bar=False)
    assert _files(tmp_path / "a") == original
    assert _epoch(tmp_path / "b" / "checkpoints" / "best.ckpt") == _epoch(
        tmp_path / "a" / "checkpoints" / "best.ckpt"
    )


def test_a_used_run_folder_is_refused_unless_resumed_or_overwritten(patches, tmp_path):
    run = tmp_path / "run"
    train(_config(patches, run, epochs=1), progress_bar=False)
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoints",
        "config.yaml",
        "metrics.csv",
        "run.json",
        "tensorboard",
    ]
    first = _files(run)
    with pytest.raises(OncoscopeError, match=r"not empty.*--resume.*--overwrite") as caught:
        train(_config(patches, run, epochs=2, lr=0.01), progress_bar=False)
    assert str(caught.value).startswith(f"{run}: ")
    assert _files(run) == first
    with pytest.raises(InvalidOptionError, match=r"--resume.*--overwrite"):
        train(_config(patches, run, epochs=2), resume=True, overwrite=True, progress_bar=False)
    train(_config(patches, run, epochs=2, lr=0.01), overwrite=True, progress_bar=False)
    assert [row["epoch"] for row in _history(run)] == ["0", "1"]
    assert "lr: 0.01" in (run / "config.yaml").read_text()
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1  # not merged
    assert _epoch(run / "checkpoints" / "last.ckpt") == 1


def test_overwrite_replaces_a_run_and_nothing_else(patches, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    for overwrite in (False, True):
        with pytest.raises(OncoscopeError, match=r"notes\.txt") as caught:
            train(_config(patches, folder, epochs=1), overwrite=overwrite, progress_bar=False)
        assert str(caught.value).startswith(f"{folder}: ")
        assert _files(folder) == {folder / "notes.txt": b"keep"}
    empty = tmp_path / "empty"
    empty.mkdir()
    train(_config(patches, empty, epochs=1), progress_bar=False)  # an empty folder is fine
    assert (empty / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_that_fails_mid_epoch_is_named_in_one_line(tmp_path, monkeypatch, workers):
    from tests.train.conftest import write_patches
    from tests.train.test_data import truncate

    manifest = write_patches(tmp_path / "p", {"train": 8, "val": 4})
    monkeypatch.setattr(training_data, "DECODE_SAMPLE", 0)  # the checks miss it
    bad = truncate(tmp_path / "p" / "train_003.png")
    with pytest.raises(CorruptFileError) as caught:
        train(_config(manifest, tmp_path / "run", num_workers=workers), progress_bar=False)
    message = str(caught.value)
    assert message.startswith(f"{bad}: cannot decode image") and "--check-images" in message
    assert "\n" not in message


def test_precision_auto_follows_the_hardware(monkeypatch):
    import oncoscope.hardware as hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device("auto") == "cpu"
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", training_device("auto")) == "bf16"
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", training_device("auto")) == "fp32"
    assert resolve_precision("fp16") == "fp16"


def test_cosine_anneals_at_every_step_over_the_whole_run(patches, tmp_path):
    # 32 training patches in batches of 16 for 3 epochs: 6 optimiser steps, step k taken at
    # lr * (1 + cos(pi * k / 6)) / 2, by hand. Stepped per epoch, steps 0-1 would share a rate.
    config = _config(
        patches, tmp_path / "run", epochs=3, scheduler="cosine", lr=0.01, batch_size=16
    )
    seen: list[float] = []
    original = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):  # the rate each step is taken with
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.Adam, "step", recording_step)
        train(config, progress_bar=False)
    expected = [0.01 * (1 + math.cos(math.pi * k / 6)) / 2 for k in range(6)]
    assert seen == pytest.approx(expected, abs=1e-12)


def test_freeze_epochs_train_only_the_output_layer_first_then_everything(patches, tmp_path):
    # 32 patches in batches of 16: 2 steps an epoch. simple_cnn's parameters: its output
    # layer (get_classifier(), a weight and a bias) and the rest. At each step, record which
    # parameters got a gradient (the optimiser leaves those without one alone).
    config = _config(patches, tmp_path / "run", epochs=2, freeze_epochs=1, batch_size=16)
    with_gradient: list[int] = []
    total: list[int] = []
    original = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        loss = original(self, *args, **kwargs)  # Lightning's closure runs the backward inside
        params = [p for group in self.param_groups for p in group["params"]]
        with_gradient.append(sum(p.grad is not None for p in params))
        total.append(len(params))
        return loss

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.Adam, "step", recording_step)
        train(config, progress_bar=False)
    assert with_gradient[:2] == [2, 2]  # epoch 0: the output layer's weight and bias alone
    assert with_gradient[2:] == total[2:] and total[2] > 2  # epoch 1: every parameter
