"""Attention MIL on real feature bags of synthetic slides whose label is a small focus.

For each seed: write 24/8/16 train/val/test synthetic slides (768 x 768 px at 1 um/px, one
tissue section with a stroma patch; in positive slides a tumour disc of 1-5% of the tissue;
``oncoscope.mil.synthetic_slides``), encode them with ``oncoscope features`` (a fixed
random-weight ``test_resnet`` checkpoint, 32-px tiles at 1 um/px, fp32; with ``--timm NAME``
instead ``oncoscope features NAME --scratch --tile-px 32``: timm's random weights, tiles resized
to the model's input size), then for each model
train as ``oncoscope mil train --standardize --epochs 8 --lr 5e-3 --precision fp32 --seed S``
(and without ``--standardize`` with ``--raw``) and predict the test slides with every tile.
Prints the held-out slide AUROC, the share of positive test slides whose top-attention tile is
at least half focus, and whose top tile touches the focus at all, and the mean focus share of
the top-5 tiles.

    python benchmarks/mil_slides.py --seeds 0 1 2 --models abmil clam_sb --out /tmp/mil-slides
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from mil_synthetic import arguments, quiet, train_and_predict

from oncoscope.features.bags import read_bag
from oncoscope.features.encoders import load_encoder
from oncoscope.features.extract import FeatureOptions, extract_slides
from oncoscope.hardware import cpu_model
from oncoscope.mil.synthetic import write_slides_csv
from oncoscope.mil.synthetic_slides import (
    FocusSlide,
    focus_cover,
    write_focus_slides,
    write_random_encoder,
)
from oncoscope.mil.train import mil_config

SPLITS = {"train": 24, "val": 8, "test": 16}


def make_bags(seed: int, root: Path, timm: str | None) -> tuple[list[FocusSlide], Path, float]:
    """The slides of one seed, their bags (in ``root/bags-S``) and the seconds features took."""
    slides = write_focus_slides(root / f"slides-{seed}", SPLITS, seed=seed)
    write_slides_csv(slides, root / f"slides-{seed}.csv")
    if timm is None:
        encoder = load_encoder(write_random_encoder(root / "encoder.ckpt"))
    else:
        encoder = load_encoder(timm, scratch=True)
    options = FeatureOptions(mpp=1.0, precision="fp32", overwrite=True, tile_px=32)
    started = time.perf_counter()
    report = extract_slides(encoder, [root / f"slides-{seed}"], root / f"bags-{seed}", options)
    assert not report.failures, report.failures
    return slides, root / f"bags-{seed}", time.perf_counter() - started


def run(
    seed: int, model: str, slides: list[FocusSlide], bags: Path, root: Path, standardize: bool
) -> tuple[float, float, float, float, float]:
    """``(auroc, top-1 at least half focus, top-1 touching it, top-5 focus share, train s)``."""
    name = f"run-{model}-{seed}-{'std' if standardize else 'raw'}"
    config = mil_config(bags=bags, labels=root / f"slides-{seed}.csv", out=root / name,
                        model=model, epochs=8, lr=5e-3, precision="fp32", seed=seed,
                        standardize=standardize)  # fmt: skip
    test = [s for s in slides if s.split == "test"]
    auroc, seconds, attentions = train_and_predict(
        config, [(bags / f"{s.path.stem}.h5", s.focus is not None) for s in test]
    )
    top1, touch, top5 = [], [], []
    for slide, attention in zip(test, attentions, strict=True):
        if slide.focus is not None:
            _, coords, info = read_bag(bags / f"{slide.path.stem}.h5")
            cover = focus_cover(slide, coords, info.attrs["tile_px_level0"])
            order = np.argsort(-attention)
            top1.append(cover[order[0]] >= 0.5)
            touch.append(cover[order[0]] > 0)
            top5.append(cover[order[:5]].mean())
    return auroc, float(np.mean(top1)), float(np.mean(touch)), float(np.mean(top5)), seconds


def main() -> None:
    parser = arguments("mil-slides")
    parser.add_argument("--raw", action="store_true", help="also train without --standardize")
    parser.add_argument("--timm", help="a timm name: its --scratch weights as the encoder")
    args = parser.parse_args()
    quiet(args.threads)
    encoder = f"{args.timm} --scratch" if args.timm else "test_resnet checkpoint, 32 px"
    print(f"machine: {cpu_model()}, torch threads {args.threads}, encoder {encoder}")
    print("| model | features | seed | tiles/slide | test AUROC | top-1 tile in focus "
          "| top-1 touches focus | top-5 focus share | features s | train s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        slides, bags, feature_seconds = make_bags(seed, args.out, args.timm)
        tiles = np.mean([len(read_bag(bags / f"{s.path.stem}.h5")[1]) for s in slides])
        for model in args.models:
            for standardize in (True, False) if args.raw else (True,):
                auroc, top1, touch, top5, seconds = run(
                    seed, model, slides, bags, args.out, standardize
                )
                scaling = "standardized" if standardize else "raw"
                figures = [f"{v:.3f}" for v in (auroc, top1, touch, top5)]
                seconds_ = [f"{feature_seconds:.0f}", f"{seconds:.0f}"]
                cells = [model, scaling, seed, f"{tiles:.0f}", *figures, *seconds_]
                print("| " + " | ".join(map(str, cells)) + " |", flush=True)


if __name__ == "__main__":
    main()
