from __future__ import annotations

import numpy as np

from oncoscope.ct.slices import HEALTHY, TUMOUR, label_slices, select_slices


def _mask() -> np.ndarray:
    mask = np.zeros((12, 40, 40), np.uint8)
    mask[2:10, 5:30, 5:30] = 1  # liver on slices 2..9
    mask[4:6, 10:13, 10:13] = 2  # small lesion: 3x3 px at 1 mm -> 4.24 mm
    mask[7, 10:35, 8:10] = 2  # large lesion on slice 7: 25x2 px, crosses the liver edge
    return mask


def test_slice_labels_agree_with_the_mask():
    mask = _mask()
    labels, lesions = label_slices(mask, (2.0, 1.0, 1.0), small_mm=20.0)
    by_index = {s.slice_index: s for s in labels}
    for k in range(mask.shape[0]):
        has_tumour = bool((mask[k] == 2).any())
        has_liver = bool((mask[k] >= 1).any())
        if not has_liver:
            assert k not in by_index
            continue
        assert by_index[k].label == (TUMOUR if has_tumour else HEALTHY)
        assert by_index[k].liver_fraction == (mask[k] >= 1).mean()
    assert len(lesions) == 2
    assert by_index[4].lesion_count == 1 and by_index[4].all_small
    assert by_index[7].max_lesion_mm == np.hypot(25, 2)
    assert not by_index[7].all_small
    assert by_index[3].lesion_count == 0 and by_index[3].max_lesion_mm == 0.0


def test_only_small_drops_slices_of_large_lesions_and_healthy_are_spread_evenly():
    labels, _ = label_slices(_mask(), (2.0, 1.0, 1.0), small_mm=20.0)
    kept = select_slices(labels, healthy_per_patient=2, only_small=True)
    tumour = [s.slice_index for s in kept if s.label == TUMOUR]
    healthy = [s.slice_index for s in kept if s.label == HEALTHY]
    assert tumour == [4, 5]
    # healthy candidates: 2, 3, 6, 8, 9 -> the centres of two equal runs: items 1 and 3
    assert healthy == [3, 8]
    everything = select_slices(labels, healthy_per_patient=99)
    assert len(everything) == len(labels)
    assert select_slices(labels, healthy_per_patient=0) == [s for s in labels if s.label == TUMOUR]
