"""Score the EM lesion segmentation (``oncoscope ct segment-em``) on a synthetic phantom cohort.

Run by hand, never in the test suite:

    .venv/bin/python benchmarks/em_lesions.py [--patients 10] [--slices 48] [--size 256] [--seed 0]

Writes a cohort of **synthetic** phantoms (1 to 3 hypodense lesions each, diameters drawn from
5 to 30 mm) to a temporary folder, runs ``segment-em`` on each volume twice (liver from the
segmentation, and from the EM liver ROI of each slice), scores each run against the phantom's
tumour label and prints the pooled figures as JSON: Dice (mean over volumes, and pooled over
voxels), lesion-level sensitivity by size (<10, 10-20, >20 mm), false positives per volume,
and seconds per volume.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DIAMETERS_MM = (5.0, 8.0, 10.0, 12.0, 15.0, 18.0, 20.0, 25.0, 30.0)


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--slices", type=int, default=48)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from oncoscope.ct.em_lesions import SIZE_BINS_MM, segment_em
    from oncoscope.ct.phantom import write_cohort

    with tempfile.TemporaryDirectory() as folder:
        pairs = write_cohort(
            folder,
            args.patients,
            shape=(args.slices, args.size, args.size),
            lesion_diameters_mm=DIAMETERS_MM,
            seed=args.seed,
        )
        report: dict[str, Any] = {
            "cohort": f"{args.patients} synthetic phantoms {args.slices}x{args.size}x"
            f"{args.size}, seed {args.seed}, lesion diameters drawn from {list(DIAMETERS_MM)} mm",
            "cpu": _cpu(),
        }
        for liver in ("mask", "em-roi"):
            dice, seconds, fps = [], [], []
            overlap = predicted = truth = 0
            bins = {name: [0, 0] for name, _, _ in SIZE_BINS_MM}
            for volume, segmentation in pairs:
                start = time.perf_counter()
                found = segment_em(
                    volume,
                    liver_mask_path=segmentation if liver == "mask" else None,
                    truth_path=segmentation,
                )
                seconds.append(time.perf_counter() - start)
                score = found.score
                assert score is not None
                dice.append(score.dice)
                fps.append(score.false_positives)
                for size_bin in score.bins:
                    bins[size_bin.name][0] += size_bin.detected
                    bins[size_bin.name][1] += size_bin.lesions
                from oncoscope.io.volumes import read_label_mask

                tumour = read_label_mask(segmentation).array == 2
                mine = found.result.labels > 0
                overlap += int((tumour & mine).sum())
                predicted += int(mine.sum())
                truth += int(tumour.sum())
            report[f"liver from {liver}"] = {
                "dice_mean": round(float(np.mean(dice)), 3),
                "dice_min": round(float(np.min(dice)), 3),
                "dice_pooled": round(2 * overlap / max(1, predicted + truth), 3),
                "sensitivity_by_size": {
                    name: f"{hit}/{total}" + (f" = {hit / total:.2f}" if total else "")
                    for name, (hit, total) in bins.items()
                },
                "false_positives_per_volume": round(float(np.mean(fps)), 2),
                "false_positives_max": int(np.max(fps)),
                "seconds_per_volume": round(float(np.mean(seconds)), 2),
            }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
