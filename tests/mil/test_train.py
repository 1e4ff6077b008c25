"""mil train: the checkpoint's spec, resume as an uninterrupted run, patient bags with CLAM-SB,
the --max-tiles cap for training only, two training processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.features.bags import read_bag
from oncoscope.mil.data import BagDataset
from oncoscope.mil.labels import load_mil_data
from oncoscope.mil.models import create_mil_model
from oncoscope.mil.predict import load_mil_model
from oncoscope.mil.synthetic import write_slides_csv, write_synthetic_bags
from oncoscope.train.checkpoint import read_checkpoint
from tests.mil.conftest import Task, one_thread

runner = CliRunner()


def _train(*args: str) -> str:
    with one_thread():
        result = runner.invoke(app, ["mil", "train", "--precision", "fp32", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _subset(task: Task, path: Path, train: int = 8, val: int = 4) -> Path:
    frame = pd.read_csv(task.labels)
    chosen = pd.concat(
        [frame[frame["split"] == "train"].head(train), frame[frame["split"] == "val"].head(val)]
    )
    chosen.to_csv(path, index=False)
    return path


def test_checkpoint_carries_its_spec_and_the_run_folder_is_complete(task: Task) -> None:
    spec = read_checkpoint(task.checkpoint)["spec"]
    assert spec["kind"] == "mil" and spec["model"] == "abmil"
    assert spec["classes"] == ["normal", "tumour"]
    assert (spec["feature_dim"], spec["encoder"], spec["bag_level"]) == (
        32,
        "synthetic-gaussian",
        "slide",
    )
    names = {p.name for p in task.run.iterdir()}
    assert {"checkpoints", "config.yaml", "metrics.csv", "run.json"} <= names
    assert not any(n.startswith(".partial-") for n in names)
    assert len(pd.read_csv(task.run / "metrics.csv")) == 8
    assert (task.run / "checkpoints" / "last.ckpt").is_file()


def test_resume_continues_as_the_uninterrupted_run(task: Task, tmp_path: Path) -> None:
    labels = _subset(task, tmp_path / "slides.csv")
    common = ["--bags", str(task.bags_dir), "--labels", str(labels), "--lr", "5e-3"]
    _train(*common, "--out", str(tmp_path / "whole"), "--epochs", "2")
    _train(*common, "--out", str(tmp_path / "parts"), "--epochs", "1")
    with one_thread():
        refused = runner.invoke(
            app, ["mil", "train", *common, "--out", str(tmp_path / "parts"), "--epochs", "2"]
        )
    assert refused.exit_code == 2 and "--resume" in refused.output
    _train(*common, "--out", str(tmp_path / "parts"), "--epochs", "2", "--resume")
    whole = read_checkpoint(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    parts = read_checkpoint(tmp_path / "parts" / "checkpoints" / "last.ckpt")
    assert parts["epoch"] == whole["epoch"] == 1
    for name, value in whole["state_dict"].items():
        assert torch.equal(parts["state_dict"][name], value), name  # bit for bit
    history = pd.read_csv(tmp_path / "parts" / "metrics.csv")
    assert list(history["epoch"]) == [0, 1]


def test_patient_bags_join_a_patients_slides(task: Task, tmp_path: Path) -> None:
    frame = _subset(task, tmp_path / "s.csv", train=12, val=8)
    rows = pd.read_csv(frame)
    # two slides of the same label per patient: slides k and k+2 alternate labels
    rows["patient"] = [f"{split}-{i // 4}-{i % 2}" for i, split in enumerate(rows["split"])]
    rows.to_csv(tmp_path / "patients.csv", index=False)
    _train("--bags", str(task.bags_dir), "--labels", str(tmp_path / "patients.csv"),
           "--out", str(tmp_path / "run"), "--bag-level", "patient", "--model", "clam_sb",
           "--k-sample", "4", "--epochs", "1")  # fmt: skip
    checkpoint = tmp_path / "run" / "checkpoints" / "best.ckpt"
    spec = read_checkpoint(checkpoint)["spec"]
    assert (spec["model"], spec["bag_level"]) == ("clam_sb", "patient")
    with one_thread():
        refused = runner.invoke(
            app,
            ["mil", "predict", str(checkpoint), "--bags", str(task.bags_dir),
             "--out", str(tmp_path / "refused")],
        )  # fmt: skip
    assert refused.exit_code == 2 and "--labels" in refused.output
    with one_thread():
        result = runner.invoke(
            app,
            ["mil", "predict", str(checkpoint), "--bags", str(task.bags_dir), "--labels",
             str(tmp_path / "patients.csv"), "--out", str(tmp_path / "out")],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    predicted = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(predicted.columns[:3]) == ["patient", "label", "split"]
    assert sorted(predicted["patient"]) == sorted(set(rows["patient"]))
    slides = rows[rows["patient"] == rows["patient"].iloc[0]]["slide"].str.removesuffix(".svs")
    assert len(slides) == 2
    total = 0.0
    for stem in slides:
        attention = np.load(tmp_path / "out" / stem / "attention.npy")
        assert len(attention) == len(read_bag(task.bags_dir / f"{stem}.h5")[1])
        total += float(attention.sum())
    assert abs(total - 1.0) < 1e-5  # one distribution over the patient's tiles


def test_max_tiles_caps_training_bags_only(task: Task) -> None:
    data = load_mil_data(task.labels, task.bags_dir)
    item = data.split("train")[0]
    full, _, _ = read_bag(item.bags[0])
    capped = BagDataset([item], data.classes, max_tiles=10, seed=3)
    first, _ = capped[(0, 0)]
    again, _ = capped[(0, 0)]
    later, _ = capped[(0, 1)]
    assert first.shape == (10, 32)
    torch.testing.assert_close(first, again)  # replayable: (seed, epoch, index)
    assert not torch.equal(first, later)  # another draw in another epoch
    rows = {tuple(r) for r in full.tolist()}
    assert all(tuple(r) in rows for r in first.tolist())
    whole, _ = capped[0]  # evaluation: every tile
    np.testing.assert_array_equal(whole.numpy(), full)


def test_standardize_scales_by_the_training_tiles_and_is_kept_in_the_checkpoint(
    task: Task, tmp_path: Path
) -> None:
    """--standardize: the model subtracts the mean and divides by the std of every training
    tile's features (val/test tiles left out); the checkpoint carries both, and the loaded
    model predicts as the same weights fed the standardized features by hand."""
    labels = _subset(task, tmp_path / "slides.csv")
    _train("--bags", str(task.bags_dir), "--labels", str(labels), "--epochs", "1",
           "--standardize", "--out", str(tmp_path / "run"))  # fmt: skip
    frame = pd.read_csv(labels)
    train = frame[frame["split"] == "train"]["slide"].map(lambda s: Path(s).stem)
    tiles = np.concatenate([read_bag(task.bags_dir / f"{s}.h5")[0] for s in train])
    checkpoint = read_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert checkpoint["spec"]["model_kwargs"]["standardize"] is True
    state = checkpoint["state_dict"]
    mean = next(v for k, v in state.items() if k.endswith("feature_mean")).numpy()
    std = next(v for k, v in state.items() if k.endswith("feature_std")).numpy()
    np.testing.assert_allclose(mean, tiles.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, tiles.std(axis=0), rtol=1e-5)
    model, spec = load_mil_model(tmp_path / "run" / "checkpoints" / "best.ckpt")
    kwargs = {**spec["model_kwargs"], "standardize": False}
    plain = create_mil_model("abmil", 32, 2, **kwargs).eval()
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("feature_")}
    plain.load_state_dict(weights)
    features = read_bag(task.bags_dir / f"{train.iloc[0]}.h5")[0]
    with torch.no_grad():
        logits, attention = model(torch.from_numpy(features))
        by_hand = plain(torch.from_numpy((features - mean) / std))
    torch.testing.assert_close(logits, by_hand[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(attention, by_hand[1], rtol=1e-4, atol=1e-6)


def test_two_training_processes_share_the_bags_out_and_make_one_run(tmp_path: Path) -> None:
    """``--devices 2`` on the CPU: the second process Lightning starts leaves the run folder
    to rank 0, and the 7 training bags are dealt 4 and 4 (one repeated), so each epoch is 4
    steps of one bag in both processes (3 and 4 would leave DDP waiting at the last)."""
    bags = write_synthetic_bags(tmp_path / "bags", {"train": 7, "val": 4}, seed=0)
    labels = write_slides_csv(bags, tmp_path / "slides.csv")
    run = tmp_path / "run"
    command = [sys.executable, "-m", "oncoscope", "mil", "train", "--bags", str(tmp_path / "bags"),
               "--labels", str(labels), "--out", str(run), "--epochs", "2", "--precision", "fp32",
               "--devices", "2", "--strategy", "ddp"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-2000:]
    assert "MEMBER: 2/2" in output and output.count("abmil: 2 epochs") == 1
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 2 * 4
    assert len(pd.read_csv(run / "metrics.csv")) == 2
