"""Liver-level balanced sampling: the liver level no longer tells a drawn slice's label, every
slice is still drawn, and manifests it cannot balance are refused before training."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.errors import InvalidOptionError
from oncoscope.train.level_sampling import liver_level_weights, training_level_weights
from tests.train.conftest import write_patches

runner = CliRunner()


def _cohort(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like training split: tumour slices mid-liver (fraction 0.3-0.6); healthy slices at
    the liver's top and bottom (0-0.25) and, fewer, at the tumours' levels, skewed low (a
    steeper skew within one of the five levels would remain after balancing)."""
    rng = np.random.default_rng(seed)
    tumour = rng.uniform(0.3, 0.6, 120)
    healthy = np.concatenate([rng.uniform(0.0, 0.25, 300), 0.3 + 0.3 * rng.beta(1, 2, 150)])
    labels = np.r_[np.ones(tumour.size, bool), np.zeros(healthy.size, bool)]
    return labels, np.r_[tumour, healthy]


def test_the_liver_level_tells_nothing_at_the_tumour_levels_and_every_slice_is_drawn():
    labels, fraction = _cohort()
    weights = liver_level_weights(labels, fraction, below_share=0.2)
    assert weights.sum() == pytest.approx(1.0) and weights[labels].sum() == pytest.approx(0.5)
    assert (weights > 0).all()  # no slice is dropped
    floor = np.percentile(fraction[labels], 10)
    below = ~labels & (fraction < floor)
    assert weights[below].sum() == pytest.approx(0.5 * 0.2)
    level = fraction >= floor  # the tumours' levels: the level as a classifier there
    plain = roc_auc_score(labels[level], fraction[level])
    drawn = roc_auc_score(labels[level], fraction[level], sample_weight=weights[level])
    assert roc_auc_score(labels, fraction) > 0.85 and plain > 0.7  # the shortcut...
    assert abs(drawn - 0.5) < 0.05  # ...is gone from what is drawn


def test_a_level_without_healthy_slices_passes_its_share_to_the_others():
    labels, fraction = _cohort(1)
    top = np.percentile(fraction[labels], 82)
    keep = labels | (fraction < top)  # no healthy slice at the tumours' top level
    labels, fraction = labels[keep], fraction[keep]
    weights = liver_level_weights(labels, fraction, below_share=0.3)
    assert weights.sum() == pytest.approx(1.0) and (weights > 0).all()
    floor = np.percentile(fraction[labels], 10)
    assert weights[~labels & (fraction < floor)].sum() == pytest.approx(0.5 * 0.3)
    at_levels = fraction >= floor
    none_below = liver_level_weights(labels[at_levels], fraction[at_levels], below_share=0.3)
    assert none_below[~labels[at_levels]].sum() == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"liver_fraction": None}, "liver_fraction"),
        ({"liver_fraction": float("nan")}, "0..1"),
        ({"liver_fraction": 1.5}, "0..1"),
        ({"label": "other"}, "healthy and tumour"),
    ],
)
def test_a_manifest_it_cannot_balance_is_refused_naming_it(change, said):
    import pandas as pd

    labels, fraction = _cohort()
    frame = pd.DataFrame(
        {
            "label": np.where(labels, "tumour", "healthy"),
            "split": "train",
            "liver_fraction": fraction,
        }
    )
    column, value = next(iter(change.items()))
    if value is None:
        frame = frame.drop(columns=column)
    else:
        frame.loc[3, column] = value
    with pytest.raises(InvalidOptionError) as raised:
        training_level_weights(frame, Path("/data/manifest.csv"))
    assert str(raised.value).startswith("/data/manifest.csv: --sampling liver-level")
    assert said in str(raised.value)


def _slices(folder: Path) -> Path:
    """A manifest of 32-px grey slices, labelled healthy/tumour, with liver fractions."""
    labels, fraction = _cohort()
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    rows = []
    for i, (tumour, share) in enumerate(zip(labels, fraction, strict=True)):
        if i % 6 and i >= 12:  # a smaller cohort: every sixth, and val/test from the first
            continue
        split = "train" if i >= 12 else ("val" if i % 2 else "test")
        name = f"s{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(folder / name)
        label = "tumour" if tumour else "healthy"
        rows.append({"path": name, "label": label, "split": split, "liver_fraction": share})
    rows[1]["label"] = "healthy"  # both classes in val
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "manifest.csv"


def test_training_draws_liver_level_balanced_batches(tmp_path):
    from oncoscope.models.spec import ModelSpec
    from oncoscope.train.data import ManifestDataModule, load_training_data

    manifest = _slices(tmp_path / "ct")
    data = load_training_data(manifest)
    spec = ModelSpec(
        model="simple_cnn", classes=tuple(data.classes), in_chans=1, image_size=32,
        mean=(0.5,), std=(0.25,),
    )  # fmt: skip
    module = ManifestDataModule(
        data, spec, batch_size=8, augment="none", balanced_sampling="liver-level",
        num_workers=0, seed=0,
    )  # fmt: skip
    sampler = module.train_dataloader().sampler
    drawn = []
    for epoch in range(200):
        sampler.set_epoch(epoch)
        drawn += [i for i, _ in sampler]
    rows = data.frame[data.frame["split"] == "train"].reset_index(drop=True)
    tumour = (rows["label"] == "tumour").to_numpy()
    fraction = rows["liver_fraction"].to_numpy()
    picked = np.array(drawn)
    assert set(picked) == set(range(len(rows)))  # every training slice is drawn
    assert 0.45 < tumour[picked].mean() < 0.55
    frequency = np.bincount(picked, minlength=len(rows)) / len(picked)
    expected = liver_level_weights(tumour, fraction)  # the split's own weights, drawn
    assert 0.5 * np.abs(frequency - expected).sum() < 0.05  # total variation distance


def test_train_takes_sampling_on_the_command_line_and_refuses_what_it_cannot_do(tmp_path):
    manifest = _slices(tmp_path / "ct")
    common = ["--model", "simple_cnn", "--epochs", "1", "--workers", "0", "--precision", "fp32"]
    run = tmp_path / "run"
    args = ["train", "--data", str(manifest), *common, "--sampling", "liver-level"]
    result = runner.invoke(app, [*args, "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert "balanced_sampling: liver-level" in (run / "config.yaml").read_text()
    patches = write_patches(tmp_path / "p", {"train": 8, "val": 4})
    refused = runner.invoke(
        app,
        ["train", "--data", str(patches), *common, "--sampling", "liver-level",
         "--out", str(tmp_path / "no")],
    )  # fmt: skip
    assert refused.exit_code == 2
    (line,) = [x for x in refused.output.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: {patches}: --sampling liver-level needs CT slices")
    assert not (tmp_path / "no").exists()
    typo = runner.invoke(app, [*args[:-1], "sideways", "--out", str(tmp_path / "typo")])
    assert typo.exit_code == 2 and "--sampling must be shuffle, balanced or liver-level" in (
        typo.output
    )
