"""Synthetic feature bags (label carried by a small focus) and one MIL run trained on them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.mil.synthetic import SyntheticBag, write_slides_csv, write_synthetic_bags

#: Bags per split of the synthetic task (half of each positive).
SPLITS = {"train": 24, "val": 8, "test": 16}
#: Training settings of the shared run (fixed seed, fp32: the same on every CPU).
TRAIN_ARGS = ["--epochs", "8", "--lr", "5e-3", "--precision", "fp32", "--seed", "0"]


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread: on two shared cores it is several times faster for tiny layers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Task:
    """The synthetic bags, their slides.csv and the run trained on them."""

    bags_dir: Path
    labels: Path
    bags: list[SyntheticBag]
    run: Path

    @property
    def checkpoint(self) -> Path:
        return self.run / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="session")
def task(tmp_path_factory: pytest.TempPathFactory) -> Task:
    """48 synthetic bags (seed 0) and an ABMIL run trained on them through the CLI."""
    root = tmp_path_factory.mktemp("mil")
    bags = write_synthetic_bags(root / "bags", SPLITS, seed=0)
    labels = write_slides_csv(bags, root / "slides.csv")
    with one_thread():
        result = CliRunner().invoke(
            app,
            ["mil", "train", "--bags", str(root / "bags"), "--labels", str(labels),
             "--out", str(root / "run"), *TRAIN_ARGS],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    return Task(root / "bags", labels, bags, root / "run")
