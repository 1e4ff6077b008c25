"""Score the liver ROI that ``oncoscope locate`` finds without ``--liver-mask`` on phantoms.

Run by hand, never in the test suite:

    .venv/bin/python benchmarks/liver_roi_phantoms.py PHANTOMS [--patients 0 1 2 ...]

PHANTOMS is a folder written by ``oncoscope ct phantom`` (``volume-N`` and ``segmentation-N``).
For each volume, two liver ROIs, each kept to its largest 3-D connected piece:

- ``raw``: the EM liver ROI of each slice on the raw pixels (what ``locate`` used up to commit
  ``7e39832``);
- ``median``: seed 001's chain, a 3 x 3 median and then the EM liver ROI
  (:func:`oncoscope.ct.em_lesions.liver_roi_volume`, what ``locate`` uses now).

Each is scored against the phantom's segmentation: Dice with the liver (labels 1 and 2), the
share of the ROI outside it, and the share of the lesion voxels (label 2) inside the ROI (a
lesion outside the ROI cannot become a ``locate`` candidate). Prints one line per volume and
the summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
from pathlib import Path
from typing import Any

import numpy as np


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phantoms", type=Path)
    parser.add_argument("--patients", type=int, nargs="*", default=None)
    args = parser.parse_args()

    from oncoscope.ct.em_lesions import liver_roi_volume
    from oncoscope.ct.liver_roi import dice
    from oncoscope.io.volumes import read_volume

    found = sorted(
        int(m.group(1))
        for p in args.phantoms.glob("volume-*.nii*")
        if (m := re.match(r"volume-(\d+)\.nii", p.name))
    )
    patients = args.patients if args.patients is not None else found
    figures: dict[str, dict[str, list[float]]] = {
        name: {"dice": [], "outside": [], "lesion_in": [], "lesion_voxels": []}
        for name in ("raw", "median")
    }
    for patient in patients:
        volume = read_volume(args.phantoms / f"volume-{patient}.nii.gz")
        labels = read_volume(args.phantoms / f"segmentation-{patient}.nii.gz").array
        liver, lesion = labels >= 1, labels == 2
        pixel_mm = (volume.spacing_mm[1], volume.spacing_mm[2])
        line = [f"volume-{patient}"]
        for name, roi in (
            ("raw", liver_roi_volume(volume.array, pixel_mm, median_size_px=1)),
            ("median", liver_roi_volume(volume.array, pixel_mm)),
        ):
            f = figures[name]
            f["dice"].append(dice(roi, liver))
            f["outside"].append(float((roi & ~liver).sum()) / max(int(roi.sum()), 1))
            f["lesion_in"].append(float((roi & lesion).sum()))
            f["lesion_voxels"].append(float(lesion.sum()))
            share = f["lesion_in"][-1] / f["lesion_voxels"][-1] if lesion.any() else float("nan")
            line.append(
                f"{name}: Dice {f['dice'][-1]:.3f}, outside {f['outside'][-1]:.3f}, "
                f"lesion voxels inside {share:.3f}"
            )
        print(" | ".join(line), flush=True)
    summary: dict[str, Any] = {"cpu": _cpu(), "volumes": len(patients)}
    for name, f in figures.items():
        summary[name] = {
            "dice_mean": round(float(np.mean(f["dice"])), 3),
            "dice_min": round(float(np.min(f["dice"])), 3),
            "outside_mean": round(float(np.mean(f["outside"])), 3),
            "lesion_voxels_inside": round(sum(f["lesion_in"]) / max(sum(f["lesion_voxels"]), 1), 3),
        }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
