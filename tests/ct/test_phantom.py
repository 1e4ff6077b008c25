from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from oncoscope.ct.lesions import find_lesions
from oncoscope.ct.phantom import SYNTHETIC_NOTE, make_phantom, write_cohort
from oncoscope.errors import InvalidOptionError


def test_lesions_have_their_requested_size_and_are_hypodense(phantom):
    lesions = find_lesions(phantom.labels == 2, phantom.spacing_mm)
    measured = sorted(lesion.diameter_mm for lesion in lesions)
    requested = sorted(lesion.diameter_mm for lesion in phantom.lesions)
    pixel_diagonal = float(np.hypot(*phantom.spacing_mm[1:]))
    assert len(measured) == len(requested) == 2
    for got, want in zip(measured, requested, strict=True):
        assert want - pixel_diagonal <= got <= want + pixel_diagonal
    liver_hu = phantom.hu[phantom.labels == 1].mean()
    lesion_hu = phantom.hu[phantom.labels == 2].mean()
    assert 80 < liver_hu < 130
    assert lesion_hu < liver_hu - 25
    assert phantom.hu.min() <= -950  # air


def test_phantoms_are_reproducible_and_seeded():
    a = make_phantom((12.0,), shape=(12, 64, 64), seed=5)
    b = make_phantom((12.0,), shape=(12, 64, 64), seed=5)
    c = make_phantom((12.0,), shape=(12, 64, 64), seed=6)
    np.testing.assert_array_equal(a.hu, b.hu)
    assert not np.array_equal(a.hu, c.hu)


def test_a_lesion_too_big_for_the_liver_is_refused():
    with pytest.raises(InvalidOptionError, match="does not fit"):
        make_phantom((400.0,), shape=(12, 64, 64))


def test_cohort_files_say_they_are_synthetic(tmp_path):
    pairs = write_cohort(tmp_path, 2, shape=(12, 64, 64), lesion_diameters_mm=(10.0,))
    assert [p.name for p, _ in pairs] == ["volume-0.nii.gz", "volume-1.nii.gz"]
    header = nib.load(pairs[0][0]).header
    assert header["descrip"].item().decode() == SYNTHETIC_NOTE
    assert "not patient data" in (tmp_path / "README.txt").read_text()
    record = json.loads((tmp_path / "phantom-0.json").read_text())
    assert record["note"] == SYNTHETIC_NOTE and record["lesions"][0]["diameter_mm"] == 10.0


def test_lesion_free_patients_have_no_tumour_voxels_and_the_others_keep_their_lesions(tmp_path):
    shape = (12, 64, 64)
    plain = write_cohort(tmp_path / "plain", 3, shape=shape, lesion_diameters_mm=(10.0,))
    mixed = write_cohort(
        tmp_path / "mixed", 3, shape=shape, lesion_diameters_mm=(10.0,), lesion_free=1
    )
    labels = [np.asarray(nib.load(mask).dataobj) for _, mask in mixed]
    assert [int((label == 2).sum()) > 0 for label in labels] == [True, True, False]
    assert int((labels[2] == 1).sum()) > 0  # a liver all the same
    for (_, before), (_, after) in zip(plain[:2], mixed[:2], strict=True):
        np.testing.assert_array_equal(nib.load(before).dataobj, nib.load(after).dataobj)
    record = json.loads((tmp_path / "mixed" / "phantom-2.json").read_text())
    assert record["lesions"] == []
    with pytest.raises(InvalidOptionError, match="lesion-free"):
        write_cohort(tmp_path / "bad", 2, shape=shape, lesion_free=3)
