"""The Grad-CAM gallery on the index page shows each image's true label beside the prediction."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from fastapi.testclient import TestClient

from oncoscope.viewer.app import create_app


def test_gallery_examples_carry_the_true_label_so_a_false_positive_shows(viewer_dir: Path):
    client = TestClient(create_app(viewer_dir), raise_server_exceptions=False)
    examples = client.get("/api/index").json()["explains"][0]["examples"]
    written = pd.read_csv(viewer_dir / "explain" / "explain.csv")
    assert [e["label"] for e in examples] == list(written["label"])
    assert [e["pred"] for e in examples] == list(written["pred"])
    # the fixture's healthy slice was predicted tumour: the gallery can now tell it apart
    assert {(e["label"], e["pred"]) for e in examples} == {
        ("tumour", "tumour"),
        ("healthy", "tumour"),
    }
