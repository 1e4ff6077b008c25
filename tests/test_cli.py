from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.ct.couinaud import SEGMENT_CODES

runner = CliRunner()


def test_doctor_reports_versions_device_and_weights():
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    import timm
    import torch

    assert facts["versions"]["torch"] == torch.__version__
    assert facts["versions"]["timm"] == timm.__version__
    assert facts["device"]["selected"] in {"cpu", "cuda"}
    assert isinstance(facts["offline_weights"], dict)
    table = runner.invoke(app, ["doctor"])
    assert table.exit_code == 0 and "openslide" in table.output


def test_ct_prepare_cli_prints_the_split_table_and_writes_the_manifest(lits_dir, tmp_path):
    result = runner.invoke(
        app,
        [
            "ct",
            "prepare",
            str(lits_dir),
            "--out",
            str(tmp_path),
            "--healthy-per-patient",
            "3",
            "--split",
            "3:1:1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "patient split" in result.output and "train" in result.output
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    assert (tmp_path / manifest["path"]).map(Path.exists).all()


def test_ct_prepare_reports_bad_inputs_in_one_line_each_and_exits_2(lits_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for stem in (
        "volume-0",
        "segmentation-0",
        "volume-1",
        "segmentation-1",
        "volume-2",
        "segmentation-2",
    ):
        shutil.copy(lits_dir / f"{stem}.nii.gz", inputs / f"{stem}.nii.gz")
    (inputs / "volume-9.nii.gz").write_bytes(b"\x1f\x8b broken")
    (inputs / "segmentation-9.nii.gz").write_bytes(b"\x1f\x8b broken")
    result = runner.invoke(app, ["ct", "prepare", str(inputs), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip().startswith("error:")]
    assert len(lines) == 1 and "volume-9.nii.gz" in lines[0]
    assert "Traceback" not in result.output
    assert (tmp_path / "out" / "manifest.csv").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ct", "prepare", "/no/such/folder", "--out", "x"], "/no/such/folder: is not a folder"),
        (["ct", "prepare", ".", "--out", "x", "--window", "brian"], "unknown window 'brian'"),
        (["ct", "prepare", ".", "--out", "x", "--split", "3:1"], "is not train:val:test"),
        (["ct", "preprocess", "/no/such.nii.gz", "--out", "x"], "/no/such.nii.gz: does not exist"),
        (["ct", "preprocess", "x.nii.gz", "--out", "x", "--noise", "pink"], "--noise 'pink'"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_debug_shows_the_traceback():
    result = runner.invoke(app, ["--debug", "ct", "preprocess", "/no/such.nii.gz", "--out", "x"])
    assert result.exit_code != 0
    assert result.exception is not None and "does not exist" in str(result.exception)


def test_ct_preprocess_saves_every_step_and_a_panel(lits_dir, tmp_path):
    result = runner.invoke(
        app,
        [
            "ct",
            "preprocess",
            str(lits_dir / "volume-1.nii.gz"),
            "--slice",
            "12",
            "--out",
            str(tmp_path),
            "--noise",
            "salt-pepper",
            "--noise-amount",
            "0.05",
            "--mask",
            str(lits_dir / "segmentation-1.nii.gz"),
        ],
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.glob("0*.png"))
    assert names == [
        "01_input.png",
        "02_resized.png",
        "03_noised.png",
        "04_denoised.png",
        "05_roi.png",
        "06_masked.png",
        "07_segmented.png",  # issue 15: EM lesion segmentation is the chain's last step
    ]
    steps = np.load(tmp_path / "steps.npz")
    assert steps["resized"].shape == (256, 256)
    # the median filter took out most of the injected noise
    noise_in = np.abs(steps["noised"] - steps["resized"]).mean()
    noise_out = np.abs(steps["denoised"] - steps["resized"]).mean()
    assert noise_out < 0.25 * noise_in
    # outside the ROI the masked image is the window's low end
    assert (steps["masked"][steps["roi"] == 0] == -100.0).all()
    record = json.loads((tmp_path / "steps.json").read_text())
    assert record["roi_dice_vs_reference"] > 0.6
    panel = Image.open(tmp_path / "panel.png")
    assert panel.size[0] > 4 * panel.size[1]  # seven panels side by side


def test_ct_preprocess_accepts_a_prepared_png(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    Image.fromarray(ramp).save(tmp_path / "slice.png")
    result = runner.invoke(
        app,
        [
            "ct",
            "preprocess",
            str(tmp_path / "slice.png"),
            "--out",
            str(tmp_path / "out"),
            "--size",
            "32",
        ],
    )
    assert result.exit_code == 0, result.output
    steps = np.load(tmp_path / "out" / "steps.npz")
    assert steps["input"].min() == pytest.approx(-100.0) and steps["input"].max() == 200.0


def test_demo_runs_end_to_end_and_learns_better_than_chance(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    for piece in ("phantoms", "manifest.csv", "panel.png", "synthetic", "best.ckpt"):
        assert piece in result.output
    manifest = pd.read_csv(tmp_path / "demo" / "ct" / "manifest.csv")
    assert set(manifest["split"]) == {"train", "val", "test"}
    # every split holds patients with and without lesions: patient-level figures are defined
    worst = manifest.groupby(["split", "patient_id"])["lesion_count"].max().gt(0)
    assert all(set(worst[split]) == {True, False} for split in ("train", "val", "test"))
    assert (tmp_path / "demo" / "preprocess" / "panel.png").exists()
    # score the held-out patients independently of the demo's own figure
    from oncoscope.train.predict import predict_split

    scored = predict_split(
        tmp_path / "demo" / "run" / "checkpoints" / "best.ckpt",
        tmp_path / "demo" / "ct" / "manifest.csv",
        "test",
    )
    recalls = [(scored["pred"] == c)[scored["label"] == c].mean() for c in ("tumour", "healthy")]
    assert min(recalls) > 0.6 and sum(recalls) / 2 >= 0.75  # chance is 0.5
    tiles = predict_split(
        tmp_path / "demo" / "wsi" / "run" / "checkpoints" / "best.ckpt",
        tmp_path / "demo" / "wsi" / "tiles" / "manifest.csv",
        "test",
    )
    assert tiles["slide"].nunique() == 1  # one held-out slide, never seen in training
    assert (tiles["pred"] == tiles["label"]).mean() >= 0.8  # chance is 1/3
    check_demo_analysis(tmp_path / "demo", result.output)


def check_demo_analysis(demo: Path, output: str) -> None:
    """The reports, maps and segments the demo ends with, and the viewer finding them."""

    from fastapi.testclient import TestClient

    from oncoscope.viewer.app import create_app

    assert f"oncoscope view {demo}" in output
    manifest = pd.read_csv(demo / "ct" / "manifest.csv", dtype={"patient_id": str})
    test_rows = manifest[manifest["split"] == "test"]
    metrics = json.loads((demo / "evaluation" / "ct" / "metrics.json").read_text())
    assert metrics["n_images"] == len(test_rows)
    auroc = metrics["macro"]["auroc"]
    assert auroc["ci_low"] <= auroc["value"] <= auroc["ci_high"]
    located = metrics["localization"]["metrics"]
    assert located["images"] == int((test_rows["lesion_count"] > 0).sum())
    page = (demo / "evaluation" / "ct" / "report.html").read_text()
    assert "Weak localisation" in page and "data:image/png;base64," in page
    assert "Couinaud segments" in page
    check_demo_locate(demo, manifest, page)
    assert (demo / "evaluation" / "wsi" / "report.html").is_file()
    explained = pd.read_csv(demo / "explain" / "explain.csv")
    assert len(explained) == len(test_rows)
    assert all((demo / "explain" / rel).is_file() for rel in explained["overlay_png"])
    for found in (demo / "couinaud").glob("*/couinaud.json"):
        lesions = json.loads(found.read_text())["lesions"]
        assert lesions and all(lesion["segment"] for lesion in lesions)
    summaries = list((demo / "wsi" / "inference").glob("*/summary.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    assert summary["tiles"] > 0 and set(summary["classes"]) >= {"tumour", "stroma", "normal"}
    scale = json.loads((summaries[0].parent / "scale.json").read_text())
    assert sum(scale["histogram"].values()) == len(scale["points"]) == 30
    client = TestClient(create_app(demo))
    index = client.get("/api/index").json()
    assert any(entry["inference"] for entry in index["slides"])
    assert index["ct_patients"] and index["explains"]
    located = json.loads((demo / "locate" / "locate.json").read_text())
    (name,) = located["inputs"]
    pid = name.removeprefix("volume-")
    key = next(p["key"] for p in index["ct_patients"] if p["patient_id"] == pid)
    (run,) = client.get("/api/ct", params={"key": key}).json()["candidates"]
    assert run["folder"] == f"locate/{name}"


def check_demo_locate(demo: Path, manifest: pd.DataFrame, page: str) -> None:
    """``locate`` ran on a held-out patient with lesions, its candidates placed in segments,
    its label map on the volume's grid, and the report's section lists them."""
    import nibabel as nib

    located = json.loads((demo / "locate" / "locate.json").read_text())
    (name,) = located["inputs"]
    pid = name.removeprefix("volume-")
    test = manifest[manifest["split"] == "test"]
    assert test.loc[test["patient_id"] == pid, "lesion_count"].max() > 0
    assert Path(located["threshold_source"]).name.endswith(".localization.json")
    candidates = pd.read_csv(demo / "locate" / "candidates.csv", dtype={"segment": str})
    volume = nib.load(demo / "phantoms" / f"volume-{pid}.nii.gz")
    label_map = nib.load(demo / "locate" / name / "candidates.nii.gz")
    assert label_map.shape == volume.shape
    np.testing.assert_allclose(label_map.affine, volume.affine)
    assert int(np.asarray(label_map.dataobj).max()) == len(candidates)
    assert all(segment in SEGMENT_CODES for segment in candidates["segment"])
    assert "Lesions located in a held-out volume" in page


def test_train_models_and_manifest_commands(tmp_path):
    from tests.train.conftest import write_patches

    manifest = write_patches(tmp_path / "patches", {"train": 16, "val": 8})
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(manifest),
            "--model",
            "simple_cnn",
            "--epochs",
            "2",
            "--out",
            str(tmp_path / "run"),
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()
    listing = runner.invoke(app, ["models"])
    assert listing.exit_code == 0 and "25,557,032" in listing.output  # resnet50, as timm counts
    from oncoscope.models import MODELS

    assert all(name in listing.output for name in MODELS)  # whole names, however narrow
    folder = tmp_path / "folder"
    for label in ("a", "b"):
        for i in range(5):
            (folder / label).mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / "patches" / "train_000.png", folder / label / f"{i}.png")
    made = runner.invoke(app, ["manifest", str(folder), "--out", str(tmp_path / "m.csv")])
    assert made.exit_code == 0, made.output
    rows = pd.read_csv(tmp_path / "m.csv")
    assert rows["path"].str.startswith("folder/").all() and len(rows) == 10


def test_train_errors_are_one_line(tmp_path):
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "none.csv"), "--out", "x"])
    assert result.exit_code == 2 and "none.csv: manifest does not exist" in result.output
    result = runner.invoke(app, ["train", "--data", "m.csv", "--out", "x", "--model", "resnt50"])
    assert (
        result.exit_code == 2 and "unknown model 'resnt50'; did you mean resnet50" in result.output
    )


def test_any_timm_name_trains_at_a_given_image_size(tmp_path):
    from tests.train.conftest import write_patches

    manifest = write_patches(tmp_path / "patches", {"train": 8, "val": 4})
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(manifest),
            "--model",
            "resnet18",
            "--image-size",
            "224",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--out",
            str(tmp_path / "run"),
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    from oncoscope.train.checkpoint import read_checkpoint

    spec = read_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt")["spec"]
    assert (spec["model"], spec["image_size"], spec["classes"]) == (
        "resnet18",
        224,
        ["adenoma", "well differentiated"],
    )


# Issue 17, item 12: a bad --out is refused before any work, in one line, by every command.
OUT_COMMANDS = {
    "ct prepare": ["ct", "prepare", "{inputs}"],
    "ct preprocess": ["ct", "preprocess", "{inputs}/volume-0.nii.gz"],
    "ct phantom": ["ct", "phantom", "--patients", "1"],
    "ct couinaud": ["ct", "couinaud", "{inputs}/volume-0.nii.gz", "{inputs}/segmentation-0.nii.gz"],
    "wsi tile": ["wsi", "tile", "{inputs}/a.tif"],
    "slide": ["slide", "{inputs}/best.ckpt", "{inputs}/a.tif"],
    "features": ["features", "{inputs}/best.ckpt", "{inputs}/a.tif"],
    "train": ["train", "--data", "{inputs}/manifest.csv", "--model", "simple_cnn"],
    "evaluate": ["evaluate", "{inputs}/best.ckpt", "--data", "{inputs}/manifest.csv"],
    "explain": ["explain", "{inputs}/best.ckpt", "{inputs}/a.png"],
    "compare": ["compare", "{inputs}/run", "--data", "{inputs}/manifest.csv"],
    "scale": ["scale", "{inputs}/best.ckpt", "{inputs}/a.tif"],
}


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder nobody may write in: a read-only mode, or (for root, whom modes do not stop)
    sysfs, which refuses new files to everyone."""
    import os

    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if os.access("/sys", os.W_OK) and Path("/sys/kernel").is_dir():
        return Path("/sys")
    pytest.skip("no folder that refuses writes to root here")


@pytest.mark.parametrize("command", sorted(OUT_COMMANDS))
@pytest.mark.parametrize("problem", ["a file", "under a file", "not writable"])
def test_a_bad_out_is_one_line_before_any_work(tmp_path, command, problem):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "note.txt").write_text("the user's file")
    if problem == "a file":
        out, expected = inputs / "note.txt", "--out is an existing file"
    elif problem == "under a file":
        out, expected = inputs / "note.txt" / "out", "note.txt is a file"
    else:
        out, expected = _unwritable_folder(tmp_path) / "out", "--out is not writable"
    before = sorted(p.name for p in inputs.iterdir())
    args = [a.replace("{inputs}", str(inputs)) for a in OUT_COMMANDS[command]]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [line for line in lines if line.startswith(f"error: {out}: ")], lines
    assert len(lines) == 1 and expected in lines[0]
    assert "Traceback" not in result.output
    assert sorted(p.name for p in inputs.iterdir()) == before
    assert (inputs / "note.txt").read_text() == "the user's file"


# Issue 17, item 19: user text reaches the console as typed (no markup, no emoji codes).
def test_options_and_paths_print_as_typed(lits_dir, tmp_path):
    split = runner.invoke(app, ["ct", "prepare", str(lits_dir), "--out", "x", "--split", "1:-1:1"])
    assert split.exit_code == 2 and "split '1:-1:1' is not" in split.output
    missing = tmp_path / "ph:+1:"
    result = runner.invoke(app, ["ct", "prepare", str(missing), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and f"error: {missing}: is not a folder" in result.output
    out = tmp_path / "ph:-1:[b]bold[/b]"
    phantom = ["ct", "phantom", "--patients", "1", "--slices", "8", "--size", "32"]
    result = runner.invoke(app, [*phantom, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"to {out}" in result.output.replace("\n", "")


def test_a_path_with_markup_characters_still_gets_its_failure_list(lits_dir, tmp_path):
    inputs = tmp_path / "in[/]:+1:"  # "[/]" closes rich markup; "/" makes it two folders
    inputs.mkdir(parents=True)
    for pid in (0, 1, 2):
        for stem in ("volume", "segmentation"):
            shutil.copy(lits_dir / f"{stem}-{pid}.nii.gz", inputs / f"{stem}-{pid}.nii.gz")
    (inputs / "volume-9.nii.gz").write_bytes(b"\x1f\x8b broken")
    (inputs / "segmentation-9.nii.gz").write_bytes(b"\x1f\x8b broken")
    out = tmp_path / "run[/]out[train]"
    result = runner.invoke(app, ["ct", "prepare", str(inputs), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not a MarkupError
    text = result.output.replace("\n", "")
    assert f"{out / 'manifest.csv'}" in text  # the folder that exists, brackets included
    assert f"error: {inputs / 'volume-9.nii.gz'}: " in result.output


# Issue 17, item 11: outputs name their inputs so that the viewer finds them from anywhere,
# and in a folder moved as a whole.
def test_the_viewer_finds_the_volume_of_a_ct_prepare_run_from_elsewhere_and_when_moved(
    lits_dir, tmp_path, monkeypatch
):
    from oncoscope.viewer.scan import scan

    project = tmp_path / "project"
    (project / "ph").mkdir(parents=True)
    for stem in ("volume-0", "segmentation-0", "volume-1", "segmentation-1", "volume-2"):
        shutil.copy(lits_dir / f"{stem}.nii.gz", project / "ph" / f"{stem}.nii.gz")
    shutil.copy(lits_dir / "segmentation-2.nii.gz", project / "ph" / "segmentation-2.nii.gz")
    monkeypatch.chdir(project)  # relative paths, as a user types them
    result = runner.invoke(app, ["ct", "prepare", "ph", "--out", "out", "--split", "1:1:1"])
    assert result.exit_code == 0, result.output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    found = {p.patient_id: p.volume for p in scan(project / "out").ct_patients}
    assert found == {pid: (project / "ph" / f"volume-{pid}.nii.gz") for pid in "012"}
    moved = tmp_path / "moved"
    shutil.move(project, moved)
    found = {p.patient_id: p.volume for p in scan(moved / "out").ct_patients}
    assert found == {pid: (moved / "ph" / f"volume-{pid}.nii.gz") for pid in "012"}


def test_the_viewer_finds_the_slide_of_a_slide_run_from_elsewhere_and_when_moved(
    tmp_path, monkeypatch
):
    from oncoscope.pathology.synthetic import write_synthetic_slide
    from oncoscope.viewer.scan import scan
    from tests.inference.conftest import write_colour_checkpoint

    project = tmp_path / "project"
    project.mkdir()
    write_colour_checkpoint(project / "colour.ckpt")
    write_synthetic_slide(project / "big.tif", (1536, 1152))
    monkeypatch.chdir(project)
    args = ["slide", "colour.ckpt", "big.tif", "--out", "maps", "--magnification", "10"]
    result = runner.invoke(app, [*args, "--stride", "1"])
    assert result.exit_code == 0, result.output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    [entry] = [e for e in scan(project / "maps").slides if e.summary is not None]
    assert entry.slide_path == project / "big.tif"
    moved = tmp_path / "moved"
    shutil.move(project, moved)
    [entry] = [e for e in scan(moved / "maps").slides if e.summary is not None]
    assert entry.slide_path == moved / "big.tif"
