"""Can the SA front end learn the features it replaces? 1x1 (SAN's) against 3x3 stems (run by hand).

The small SA-EfficientNet-Lite0 front end takes the place of Lite0's stem and ``blocks.0-2``.
Here it goes through training's warm start alone (``oncoscope.train.warm_start``: trained on
the demo cohort's training slices, image pixels only, no labels, no masks, to reproduce what
those pretrained layers produce, the input of ``blocks.3``, each channel standardised over the
training slices, by mean squared error; Adam 1e-3, batch 16, ``--epochs`` epochs, then its
batch statistics recomputed). The figure is the relative error on the val slices in evaluation
mode (mean squared error of the standardised target; 1.0 is what predicting each channel's mean
gives, 0 a perfect copy), per stem kernel and seed, beside a plain three-layer 3x3 convolution
stack through the same warm start as a reference.

    .venv/bin/python benchmarks/sa_front_end_stem.py --seeds 0 1 2 --epochs 4

``--work DIR`` keeps the cohort (``benchmarks/demo_ct_localization.py`` writes the same one).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from demo_ct_localization import cohort  # beside this script
from phantom_localization import machine_line
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from oncoscope.dataset.manifest import read_manifest
from oncoscope.models import create_model
from oncoscope.train.warm_start import warm_start_front

SIDE = 224


def slices(manifest: Path, split: str, mean: float, std: float, side: int = SIDE) -> torch.Tensor:
    """The split's slices as normalised ``(N, 1, side, side)`` float32, as training feeds them."""
    frame = read_manifest(manifest)
    frame = frame[frame["split"] == split]
    images = []
    for path in frame["path"]:
        with Image.open(manifest.parent / path if not Path(path).is_absolute() else path) as im:
            images.append(normalised(np.asarray(im.convert("L")), mean, std, side))
    return torch.from_numpy(np.stack(images))[:, None]


def normalised(
    grey: np.ndarray[Any, Any], mean: float, std: float, side: int = SIDE
) -> np.ndarray[Any, Any]:
    """A uint8 slice resized to ``side`` px (bilinear, kept uint8) and normalised, float32."""
    resized = Image.fromarray(grey).resize((side, side), Image.BILINEAR)
    return (np.asarray(resized, np.float32) / 255.0 - mean) / std


class _ConvFront(nn.Module):
    """Three 3x3 stride-2 convolutions (BN-ReLU), then a 1x1 projection to Lite0's 40 channels."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout in ((1, 32), (32, 64), (64, 128)):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.project = nn.Sequential(nn.Conv2d(128, 40, 1), nn.BatchNorm2d(40))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.project(self.body(x))
        return out


class _WithFront(nn.Module):
    """What the warm start needs of a model: ``front``, ``replaced_stages``, a classifier."""

    def __init__(self, front: nn.Module, replaced: nn.Module) -> None:
        super().__init__()
        self.front, self.head = front, nn.Linear(1, 1)
        object.__setattr__(self, "replaced_stages", replaced)

    def get_classifier(self) -> nn.Module:
        return self.head


class _Slices(Dataset[tuple[torch.Tensor, int]]):
    """Items ``(index, epoch)`` as training's sampler gives them; no augmentation."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        return self.images[item[0]], 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(machine_line())
    work = args.work or Path(tempfile.mkdtemp(prefix="sa-stem-"))
    manifest = cohort(work / "cohort-0", 0)
    teacher_model = create_model("efficientnet_lite0", num_classes=2, pretrained=True, in_chans=1)
    cfg = teacher_model.pretrained_cfg
    mean, std = float(np.mean(cfg["mean"])), float(np.mean(cfg["std"]))
    teacher = nn.Sequential(
        teacher_model.conv_stem, teacher_model.bn1, *teacher_model.blocks[:3]
    ).eval()
    x, x_val = slices(manifest, "train", mean, std), slices(manifest, "val", mean, std)
    with torch.no_grad():
        target, target_val = teacher(x), teacher(x_val)
    centre = target.mean(dim=(0, 2, 3), keepdim=True)
    scale = target.std(dim=(0, 2, 3), keepdim=True) + 1e-3
    print(f"# {len(x)} training and {len(x_val)} val slices; target {tuple(target.shape[1:])}")
    rows = []
    for seed in args.seeds:
        for student_name in ("stem 1x1 (SAN)", "stem 3x3", "3x3 conv stack"):
            torch.manual_seed(seed)
            if student_name == "3x3 conv stack":
                model: nn.Module = _WithFront(_ConvFront(), teacher)
            else:
                kernel = 1 if "1x1" in student_name else 3
                model = create_model(
                    "sa_efficientnet_lite0", num_classes=2, in_chans=1, stem_kernel=kernel
                )
                object.__setattr__(model, "replaced_stages", teacher)  # the same pretrained one
            done = warm_start_front(model, _Slices(x), epochs=args.epochs, batch_size=16, seed=seed)
            front: Any = model.front
            front.eval()
            with torch.no_grad():  # on the target's scale after the warm start
                copied = front(x_val)
            val_error = float(F.mse_loss((copied - centre) / scale, (target_val - centre) / scale))
            row = {
                "student": student_name,
                "seed": seed,
                "epochs": args.epochs,
                "train_rel_mse": round(done.relative_error, 3),
                "val_rel_mse": round(val_error, 3),
                "seconds": round(done.seconds, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| student | val relative error (range over seeds) | train, last epoch |")
    print("|---|---|---|")
    for name in dict.fromkeys(r["student"] for r in rows):
        val = [r["val_rel_mse"] for r in rows if r["student"] == name]
        tr = [r["train_rel_mse"] for r in rows if r["student"] == name]
        print(f"| {name} | {min(val):.3f}-{max(val):.3f} | {min(tr):.3f}-{max(tr):.3f} |")


if __name__ == "__main__":
    main()
