from __future__ import annotations

import csv

import pytest
import torch

from oncoscope.errors import OncoscopeError
from oncoscope.train.checkpoint import load_model, read_checkpoint
from oncoscope.train.config import resolve_config
from oncoscope.train.predict import predict_split
from oncoscope.train.run import resolve_precision, train


def _config(patches, out, **extra):
    return resolve_config(
        overrides={
            "data": patches,
            "out": out,
            "model": "simple_cnn",
            "num_workers": 0,
            "precision": "32",
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


def test_precision_auto_follows_the_hardware(monkeypatch):
    import oncoscope.train.run as run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(run, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto") == "bf16-mixed"
    monkeypatch.setattr(run, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto") == "32-true"
    assert resolve_precision("16") == "16-mixed" and resolve_precision("32") == "32-true"
