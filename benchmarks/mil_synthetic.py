"""Attention MIL on synthetic bags whose label is carried by a small focus (1-5% of the tiles).

For each seed and model: write 24/8/16 train/val/test bags (``oncoscope.mil.synthetic``),
train as ``oncoscope mil train --epochs 8 --lr 5e-3 --precision fp32 --seed S`` does, predict
the test slides with every tile, and print the held-out slide-level AUROC and the share of
positive test slides whose top-attention tile lies in the focus (top-1), and the share of the
top-5 tiles in the focus. ``--big-bag N`` also times one training step on a bag of N tiles of
1024 features and prints the process's peak resident memory.

    python benchmarks/mil_synthetic.py --seeds 0 1 2 --models abmil clam_sb --out /tmp/mil-bench
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from oncoscope.features.bags import read_bag
from oncoscope.hardware import cpu_model
from oncoscope.mil.models import create_mil_model
from oncoscope.mil.predict import load_mil_model
from oncoscope.mil.synthetic import write_slides_csv, write_synthetic_bags
from oncoscope.mil.train import MilConfig, mil_config, train_mil


def train_and_predict(
    config: MilConfig, tests: list[tuple[Path, bool]]
) -> tuple[float, float, list[np.ndarray]]:
    """Train as configured, predict the ``(bag, positive)`` test bags with every tile:
    ``(slide AUROC, training seconds, each test bag's attention)``."""
    started = time.perf_counter()
    result = train_mil(config, overwrite=True, progress_bar=False)
    seconds = time.perf_counter() - started
    network, _ = load_mil_model(result.best_checkpoint)
    scores, attentions = [], []
    for bag, _ in tests:
        features, _, _ = read_bag(bag)
        with torch.inference_mode():
            logits, attention = network(torch.from_numpy(features))
        scores.append(float(torch.softmax(logits, 1)[0, 1]))
        attentions.append(attention.numpy())
    return roc_auc_score([positive for _, positive in tests], scores), seconds, attentions


def run(seed: int, model: str, root: Path) -> tuple[float, float, float, float]:
    """``(auroc, top-1 in focus, top-5 share in focus, training seconds)`` of one run."""
    bags = write_synthetic_bags(root / f"bags-{seed}", {"train": 24, "val": 8, "test": 16},
                                seed=seed)  # fmt: skip
    labels = write_slides_csv(bags, root / f"slides-{seed}.csv")
    config = mil_config(bags=root / f"bags-{seed}", labels=labels, out=root / f"run-{model}-{seed}",
                        model=model, epochs=8, lr=5e-3, precision="fp32", seed=seed)  # fmt: skip
    test = [b for b in bags if b.split == "test"]
    auroc, seconds, attentions = train_and_predict(
        config, [(b.path, b.label == "tumour") for b in test]
    )
    top1, top5 = [], []
    for bag, attention in zip(test, attentions, strict=True):
        if bag.label == "tumour":
            order = np.argsort(-attention)
            focus = set(bag.focus.tolist())
            top1.append(order[0] in focus)
            top5.append(np.mean([i in focus for i in order[:5]]))
    return auroc, float(np.mean(top1)), float(np.mean(top5)), seconds


def big_bag_step(tiles: int) -> float:
    """Seconds of one ABMIL training step (forward, backward, Adam) on ``tiles`` x 1024."""
    model = create_mil_model("abmil", 1024, 2)
    optimizer = torch.optim.Adam(model.parameters())
    features = torch.randn(tiles, 1024)
    started = time.perf_counter()
    logits, _ = model(features)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([1]))
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return time.perf_counter() - started


def arguments(out: str) -> argparse.ArgumentParser:
    """The options the MIL benchmarks share: ``--seeds``, ``--models``, ``--out``, ``--threads``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["abmil", "clam_sb"])
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--threads", type=int, default=1)
    return parser


def quiet(threads: int) -> None:
    """Lightning's and the libraries' chatter off; torch on ``threads`` threads."""
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)


def main() -> None:
    parser = arguments("mil-bench")
    parser.add_argument("--big-bag", type=int, default=0)
    args = parser.parse_args()
    quiet(args.threads)
    print(f"machine: {cpu_model()}, torch threads {args.threads}")
    print("| model | seed | test AUROC | top-1 tile in focus | top-5 tiles in focus | train s |")
    print("|---|---|---|---|---|---|")
    for model in args.models:
        for seed in args.seeds:
            auroc, top1, top5, seconds = run(seed, model, args.out)
            print(f"| {model} | {seed} | {auroc:.3f} | {top1:.3f} | {top5:.3f} | {seconds:.0f} |",
                  flush=True)  # fmt: skip
    if args.big_bag:
        seconds = big_bag_step(args.big_bag)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"one training step on {args.big_bag} x 1024 features: {seconds:.2f} s, "
              f"peak RSS {peak_mib:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
