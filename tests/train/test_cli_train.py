"""``oncoscope train`` on the command line: what it says about a run folder already in use."""

from __future__ import annotations

from pathlib import Path

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
