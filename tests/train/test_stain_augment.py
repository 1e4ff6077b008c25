"""``oncoscope train --stain-augment SIGMA``: H&E stain jitter of the training tiles only."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image
from skimage.data import immunohistochemistry
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.models.spec import ModelSpec
from oncoscope.train.data import ManifestDataModule, load_training_data
from tests.train.conftest import LABELS, write_patches

TILE = 64


@pytest.fixture(scope="module")
def stained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64-px tiles of a real stained image (scikit-image's IHC sample), tiled from 3 slides."""
    folder = tmp_path_factory.mktemp("stained")
    image = immunohistochemistry()
    rows = []
    for index in range(16):
        row, col = divmod(index, 4)
        tile = image[row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE]
        name = f"tile_{index:02d}.png"
        Image.fromarray(tile).save(folder / name)
        split = "train" if index < 8 else "val" if index < 12 else "test"
        rows.append({"path": name, "label": LABELS[index % 2], "split": split, "slide": split})
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "manifest.csv"


def _batches(manifest: Path, sigma: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """The first batch of each split's loader, images as the model would see them."""
    data = load_training_data(manifest)
    spec = ModelSpec(
        model="simple_cnn", classes=tuple(data.classes), in_chans=3, image_size=TILE,
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
    )  # fmt: skip
    module = ManifestDataModule(
        data, spec, batch_size=8, augment="none", balanced_sampling=False, num_workers=0,
        seed=seed, stain_augment=sigma,
    )  # fmt: skip
    loaders = {
        "train": module.train_dataloader(),
        "val": module.val_dataloader(),
        "test": module.test_dataloader(),
    }
    return {split: next(iter(loader))[0] for split, loader in loaders.items()}


def test_stain_augment_changes_training_tiles_only_and_replays_with_the_seed(
    stained: Path,
) -> None:
    plain = _batches(stained, 0.0)
    jittered = _batches(stained, 0.3)
    again = _batches(stained, 0.3)
    other_seed = _batches(stained, 0.3, seed=1)
    # same seed, same tiles in the same order: only the stain jitter differs
    change = (jittered["train"] - plain["train"]).abs().mean(dim=(1, 2, 3))
    assert bool((change > 0.02).all())  # every tile re-stained (normalised units)
    assert torch.equal(jittered["train"], again["train"])
    assert not torch.equal(other_seed["train"], jittered["train"])
    for split in ("val", "test"):
        assert torch.equal(jittered[split], plain[split])


def test_a_one_epoch_training_with_it_records_the_strength(stained: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["train", "--data", str(stained), "--model", "simple_cnn", "--epochs", "1",
         "--batch-size", "4", "--stain-augment", "0.2", "--workers", "0", "--precision",
         "fp32", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["stain_augment"] == 0.2
    assert "stain_augment: 0.2" in (out / "config.yaml").read_text()
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["optim"]["stain_augment"] == 0.2


@pytest.mark.parametrize(("kind", "message"), [("ct", "CT slice"), ("grey", "greyscale")])
def test_ct_or_greyscale_manifests_are_refused_in_one_line(
    tmp_path: Path, kind: str, message: str
) -> None:
    manifest = write_patches(
        tmp_path / "data", {"train": 4, "val": 2}, mode="L" if kind == "grey" else "RGB"
    )
    if kind == "ct":
        frame = pd.read_csv(manifest)
        frame["window"] = "liver"
        frame.to_csv(manifest, index=False)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["train", "--data", str(manifest), "--model", "simple_cnn", "--stain-augment", "0.2",
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 2
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: {manifest}: ")
    assert message in line and "--stain-augment" in line
    assert not out.exists()  # refused before anything was written


def test_strength_out_of_range_is_refused(stained: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["train", "--data", str(stained), "--stain-augment", "1.5", "--out", str(tmp_path)],
    )
    assert result.exit_code == 2 and "stain_augment" in result.output
    assert not list(tmp_path.iterdir())
