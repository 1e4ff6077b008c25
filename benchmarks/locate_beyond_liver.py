"""How far beyond the EM liver ROI ``oncoscope locate`` should keep a candidate.

Run by hand, never in the test suite:

    .venv/bin/python benchmarks/locate_beyond_liver.py CHECKPOINT PHANTOMS --volumes 6 7 11 \\
        [--distances-mm 0 5 10 20 inf]

CHECKPOINT is a CT slice classifier with the threshold ``evaluate --localization`` recorded
beside it; PHANTOMS a folder written by ``oncoscope ct phantom`` (``volume-N`` and
``segmentation-N``). For each volume the model's maps are computed once, as ``locate`` computes
them with the EM liver ROI, and then the candidates at each distance
(:func:`oncoscope.locate.candidates.stack_slice_candidates`, the function ``locate`` calls; 0
cuts at the ROI's edge, ``inf`` keeps whole pieces) are joined in 3-D and matched with the true
lesions as ``locate --truth`` matches them. Prints per distance: lesions found, false
candidates, lesions split among candidates, candidates joining lesions, and the size error
(candidate minus true largest in-plane diameter, mm) over the lesions that one candidate alone
covers.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("phantoms", type=Path)
    parser.add_argument("--volumes", type=int, nargs="+", required=True)
    parser.add_argument("--distances-mm", type=float, nargs="+", default=[0, 5, 10, 20, math.inf])
    parser.add_argument("--min-prob", type=float, default=0.5)
    args = parser.parse_args()

    from oncoscope.ct.em_lesions import liver_roi_volume
    from oncoscope.ct.lesions import find_lesions, label_lesions
    from oncoscope.ct.slices import TUMOUR_LABEL
    from oncoscope.io.volumes import read_label_mask, read_volume
    from oncoscope.locate.candidates import stack_slice_candidates
    from oncoscope.locate.detection import match_volume
    from oncoscope.locate.model_input import ct_model_input, model_pixels, tumour_maps
    from oncoscope.locate.threshold import choose_threshold
    from oncoscope.train.checkpoint import load_model

    choice = choose_threshold(args.checkpoint, None)
    model, spec = load_model(args.checkpoint)
    model_input = ct_model_input(spec, args.checkpoint)
    totals = {d: np.zeros(5, int) for d in args.distances_mm}
    errors: dict[float, list[float]] = {d: [] for d in args.distances_mm}
    for number in args.volumes:
        volume = read_volume(args.phantoms / f"volume-{number}.nii.gz")
        truth_path = args.phantoms / f"segmentation-{number}.nii.gz"
        truth = np.asarray(read_label_mask(truth_path).array) == TUMOUR_LABEL
        spacing = volume.spacing_mm
        pixel_mm = (spacing[1], spacing[2])
        liver = liver_roi_volume(volume.array, pixel_mm)
        slices = [int(k) for k in np.flatnonzero(liver.any(axis=(1, 2)))]
        maps = tumour_maps(
            model,
            model_input,
            [model_pixels(volume.array[k], model_input, liver[k], pixel_mm) for k in slices],
            method=choice.method or "gradcam",
            layers=choice.layers,
            stage=choice.stage,
        )
        truth_ids = label_lesions(truth)
        for distance in args.distances_mm:
            stacked = stack_slice_candidates(
                slices,
                [m.heat for m in maps],
                [m.prob for m in maps],
                liver,
                threshold=choice.threshold,
                min_prob=args.min_prob,
                pixel_mm=pixel_mm,
                beyond_liver_mm=distance,
            )
            candidates, scores = stacked.mask, stacked.scores
            labels = label_lesions(candidates)
            best = np.zeros(int(labels.max()) + 1)
            np.maximum.at(best, labels.ravel(), scores.ravel().astype(np.float64))
            matched = match_volume(f"{number}", labels, list(best[1:]), truth, spacing)
            row = [
                len(matched.lesions),
                sum(1 for _, score in matched.lesions if score >= 0),
                len(matched.false_scores),
                sum(1 for n in matched.candidates_per_lesion if n > 1),
                sum(1 for n in matched.lesions_per_candidate if n > 1),
            ]
            totals[distance] += row
            both = (truth_ids > 0) & (labels > 0)
            pairs = np.unique(np.stack([truth_ids[both], labels[both]]), axis=1)
            measured = find_lesions(candidates, spacing)
            for truth_id, candidate in pairs.T:
                if (pairs[0] == truth_id).sum() == 1 and (pairs[1] == candidate).sum() == 1:
                    true_mm = matched.lesions[truth_id - 1][0]
                    errors[distance].append(measured[candidate - 1].diameter_mm - true_mm)
            print(f"volume-{number} {distance:g} mm: lesions, found, false, split, joined {row}")
    for distance in args.distances_mm:
        lesions, hits, false, split, joined = (int(v) for v in totals[distance])
        error = np.asarray(errors[distance])
        size = (
            f"size error median {np.median(error):+.1f} mm, mean absolute "
            f"{np.abs(error).mean():.1f} mm over {len(error)}"
            if len(error)
            else "no one-to-one pair"
        )
        print(
            f"{distance:g} mm: found {hits} of {lesions}, false {false}, split {split}, "
            f"joined {joined}; {size}"
        )


if __name__ == "__main__":
    main()
