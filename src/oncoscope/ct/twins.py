"""Twin phantoms: one anatomy drawn with and without lesions, prepared and split by pair.

A controlled cohort for weak localisation: the lesions are the only difference between a
tumour slice and the healthy slice of its twin, so a model that tells them apart must use the
lesion, and a map that points elsewhere is the map's failure, not the data's. Twins share a
``group`` (the pair) and are split by pair, never by phantom. Synthetic: not patient data.

The healthy slices are the twin's slices at the tumour slices' levels and no others. Lesions
sit in the middle of the liver, so a cohort with every healthy slice makes the anatomy of the
level a second cue (the liver's ends are always healthy): a model trained on it can learn "mid
liver" instead of "lesion", and which cue wins changes with the training seed and the CPU's
kernels (measured: pointing game 0.00 on one seed, its map on the liver's front edge).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from oncoscope.ct.phantom import make_phantom, write_lits_pair
from oncoscope.ct.slice_dataset import PrepareOptions, prepare_dataset
from oncoscope.ct.window import parse_window
from oncoscope.errors import OncoscopeError

#: Pairs per split of the default 15-pair cohort.
SPLIT_PAIRS: Mapping[str, range] = {
    "train": range(0, 9),
    "val": range(9, 12),
    "test": range(12, 15),
}


def write_twin_cohort(
    folder: str | Path,
    *,
    seed: int = 0,
    lesion_diameters_mm: Sequence[float] = (25.0, 30.0),
    shape: tuple[int, int, int] = (24, 96, 96),
    fov_mm: float = 200.0,
    lesion_contrast_hu: float = -40.0,
    min_section_mm: float = 15.0,
    split_pairs: Mapping[str, range] = SPLIT_PAIRS,
) -> Path:
    """Write twin phantoms, prepare their slices and return the paired manifest.

    Pair ``p`` is drawn from seed ``1000 * seed + p`` twice: with the lesions (patient
    ``2p``) and without (patient ``2p + 1``); liver window. Kept: the tumour slices (largest
    lesion section at least ``min_section_mm``) and the healthy twin's slices at the same
    levels, so both classes have the same anatomy, level for level.

    Args:
        folder: receives ``lits/`` (the volumes) and ``ct/`` (slices, masks, manifests).
        seed: cohort seed (lesion places, anatomy and noise differ per pair).
        lesion_diameters_mm: lesions of each tumour twin, in mm.
        shape: ``(D, H, W)`` of each phantom.
        fov_mm: in-plane field of view in mm.
        lesion_contrast_hu: added to the lesions' HU (negative: more hypodense).
        min_section_mm: tumour slices whose largest lesion section is smaller are dropped.
        split_pairs: pair indices of each split; the pair count is their union's size.

    Returns:
        ``folder/ct/paired.csv``: ``ct prepare``'s manifest with ``group`` = pair, the split by
        pair, and as many healthy as tumour slices.

    Raises:
        OncoscopeError: the slices could not be prepared.
    """
    root = Path(folder)
    pairs = sorted(p for r in split_pairs.values() for p in r)
    for pair in pairs:
        for twin, diameters_mm in ((0, tuple(lesion_diameters_mm)), (1, ())):
            phantom = make_phantom(
                diameters_mm, shape=shape, fov_mm=fov_mm, slice_mm=5.0, seed=1000 * seed + pair
            )
            lesion = phantom.labels == 2
            shifted = phantom.hu[lesion] + lesion_contrast_hu
            phantom.hu[lesion] = np.round(shifted).astype(phantom.hu.dtype)
            write_lits_pair(phantom, root / "lits", 2 * pair + twin, orientation="RAS")
    options = PrepareOptions(windows=(parse_window("liver"),), healthy_per_patient=shape[0])
    report = prepare_dataset(root / "lits", root / "ct", options)
    if report.manifest is None:
        raise OncoscopeError("twin phantoms could not be prepared", root / "lits")
    frame = pd.read_csv(report.manifest)
    frame["group"] = frame["patient_id"].astype(int) // 2
    frame["split"] = ""
    for split, members in split_pairs.items():
        frame.loc[frame["group"].isin(list(members)), "split"] = split
    patient = frame["patient_id"].astype(int)
    tumour = (patient % 2 == 0) & (frame["max_section_mm"] >= min_section_mm)
    levels = set(zip(frame.loc[tumour, "group"], frame.loc[tumour, "slice_index"], strict=True))
    matched = (patient % 2 == 1) & pd.Series(
        [(g, i) in levels for g, i in zip(frame["group"], frame["slice_index"], strict=True)],
        index=frame.index,
    )
    frame = frame[tumour | matched]
    manifest = root / "ct" / "paired.csv"
    frame.to_csv(manifest, index=False)
    return manifest
