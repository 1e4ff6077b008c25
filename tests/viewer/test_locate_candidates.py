"""The CT page shows ``oncoscope locate``'s candidates: listed, and outlined on their slices."""

from __future__ import annotations

import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from oncoscope.ct.slice_dataset import PrepareOptions, prepare_dataset
from oncoscope.ct.window import PRESETS
from oncoscope.locate.run import CANDIDATE_COLUMNS


@pytest.fixture(scope="module")
def served(lits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ct/`` (ct prepare of the phantoms) and ``located/``: a locate output for volume-1 whose
    candidate map is its true tumour (the documented format, on the input's grid)."""
    root = tmp_path_factory.mktemp("served")
    prepare_dataset(lits_dir, root / "ct", PrepareOptions(windows=(PRESETS["liver"],)))
    folder = root / "located" / "volume-1"
    folder.mkdir(parents=True)
    truth = nib.load(lits_dir / "segmentation-1.nii.gz")
    labels = (np.asarray(truth.dataobj) == 2).astype(np.uint16)
    nib.save(nib.Nifti1Image(labels, truth.affine), folder / "candidates.nii.gz")
    row: dict[str, object] = dict.fromkeys(CANDIDATE_COLUMNS, "")
    row.update(input="volume-1", kind="volume", candidate_id=1, first_slice=3, last_slice=6,
               diameter_mm=12.5, volume_ml=0.9, score=0.8, segment="VII")  # fmt: skip
    pd.DataFrame([row]).to_csv(folder / "candidates.csv", index=False)
    record = {
        "threshold": 0.42,
        "threshold_source": "--threshold",
        "inputs": {
            "volume-1": {
                "kind": "volume",
                "path": str(lits_dir / "volume-1.nii.gz"),
                "candidates": 1,
                "couinaud": {"approximate": True},
            }
        },
    }
    (root / "located" / "locate.json").write_text(json.dumps(record))
    return root


def test_the_ct_page_lists_and_outlines_the_candidates(served: Path) -> None:
    from oncoscope.viewer.app import create_app

    client = TestClient(create_app(served), raise_server_exceptions=False)
    index = client.get("/api/index").json()
    keys = {p["patient_id"]: p["key"] for p in index["ct_patients"]}
    patient = client.get("/api/ct", params={"key": keys["1"]}).json()
    (run,) = patient["candidates"]
    assert run["folder"] == "located/volume-1" and run["threshold"] == 0.42
    assert run["approximate"] is True
    assert run["rows"][0]["segment"] == "VII" and run["rows"][0]["diameter_mm"] == "12.5"
    other = client.get("/api/ct", params={"key": keys["2"]}).json()
    assert other["candidates"] == []
    tumour_slice = next(s["index"] for s in patient["slices"] if s["label"] == "tumour")
    params = {"key": keys["1"], "index": tumour_slice}
    outline = client.get("/api/ct/candidates.png", params={**params, "folder": run["folder"]})
    lesion = client.get("/api/ct/mask.png", params={**params, "kind": "lesion"})
    assert outline.status_code == 200 and lesion.status_code == 200
    drawn = np.asarray(Image.open(io.BytesIO(outline.content)))[..., 3] > 0
    truth = np.asarray(Image.open(io.BytesIO(lesion.content)))[..., 3] > 0
    assert drawn.any() and np.array_equal(drawn, truth)  # the map is the tumour: same outline
    # on another patient's volume grid, or outside the folder: not found
    wrong = client.get(
        "/api/ct/candidates.png", params={"key": keys["2"], "index": 0, "folder": run["folder"]}
    )
    assert wrong.status_code == 404
    outside = client.get("/api/ct/candidates.png", params={**params, "folder": "../.."})
    assert outside.status_code == 404
