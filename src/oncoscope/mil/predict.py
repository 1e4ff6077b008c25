"""``oncoscope mil predict``: bag probabilities and per-slide attention from a MIL checkpoint.

``OUT/predictions.csv`` has one row per bag: ``slide`` (slide bags) or ``patient`` (patient
bags), ``label`` and ``split`` when ``slides.csv`` gives them, ``pred`` and ``prob_<class>``.
Per slide, ``OUT/<slide stem>/`` holds ``attention.npy`` (``(n,) float32``, the softmax
attention weight of each tile, aligned with the bag's ``coords``; over a patient bag the
weights sum to 1 over all the patient's tiles), ``attention.tif`` and ``attention.png`` (see
:mod:`oncoscope.mil.heatmap`), ``top_tiles.png`` (when the slide file is found) and
``top_attention.geojson``. ``OUT/predict.json`` records the checkpoint, bags and notes.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from oncoscope.errors import OncoscopeError
from oncoscope.features.bags import BagInfo, find_bags, read_bag, read_bag_info
from oncoscope.io.atomic import atomic_path, write_json
from oncoscope.mil import heatmap
from oncoscope.mil.labels import MilItem, join_bags, read_slide_table
from oncoscope.mil.models import AttentionMIL, create_mil_model
from oncoscope.train.checkpoint import load_module_weights, read_checkpoint

#: The record of a prediction folder; ``--overwrite`` removes only what it lists.
RECORD = "predict.json"
#: Per slide folder: where the attention map lies on the slide (read by ``oncoscope view``).
ATTENTION_RECORD = "attention.json"


@dataclass
class BagPrediction:
    """One bag's probabilities and, per slide, its tiles' attention.

    Attributes:
        item: the bag.
        probabilities: ``(classes,)`` float64.
        attention: per slide bag file, ``(n,) float32`` softmax weights (over the whole bag).
    """

    item: MilItem
    probabilities: np.ndarray[Any, Any]
    attention: list[np.ndarray[Any, Any]]


@dataclass
class PredictResult:
    """What ``mil predict`` wrote, and the bags it could not use (``(bag, problem)``)."""

    out: Path
    predictions_csv: Path
    slide_folders: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def is_mil_spec(spec: dict[str, Any]) -> bool:
    """Whether a checkpoint's spec is a MIL model's (``mil train`` writes ``kind: mil``)."""
    return spec.get("kind") == "mil"


def load_mil_model(path: str | Path) -> tuple[AttentionMIL, dict[str, Any]]:
    """Rebuild a MIL model from its checkpoint, in eval mode, with its spec.

    Raises:
        OncoscopeError: not a checkpoint, not a MIL checkpoint, or weights that do not fit.
    """
    checkpoint = read_checkpoint(path)
    spec = checkpoint["spec"]
    if not is_mil_spec(spec):
        raise OncoscopeError(
            "not a MIL checkpoint (made by oncoscope train, not mil train); use oncoscope slide",
            path,
        )
    model = create_mil_model(
        spec["model"], int(spec["feature_dim"]), len(spec["classes"]), **spec["model_kwargs"]
    )
    load_module_weights(model, checkpoint["state_dict"], f"MIL model {spec['model']}", path)
    return model.eval(), spec


def bag_items(
    spec: dict[str, Any], bags: str | Path, labels: str | Path | None
) -> tuple[list[MilItem], list[BagInfo]]:
    """The bags to predict: those ``labels`` names (all of ``bags`` without it), checked.

    Raises:
        OncoscopeError: patient bags without ``labels``; slides without bags; bags from another
            encoder or of another feature size than the checkpoint's.
    """
    level = str(spec.get("bag_level", "slide"))
    if labels is not None:
        frame = read_slide_table(labels, labelled=False)
        labelled = {"label", "split"} <= set(frame.columns)
        items, infos = join_bags(frame, bags, labels, bag_level=level, labelled=labelled)
    elif level == "patient":
        raise OncoscopeError(
            "the checkpoint was trained on patient bags; pass --labels slides.csv with a "
            "patient column to group the slides"
        )
    else:
        found = find_bags(bags)
        infos = [read_bag_info(p) for p in found.values()]
        items = [MilItem(stem, stem, "", "", (p,)) for stem, p in found.items()]
    for info in infos:
        if info.encoder != spec["encoder"] or info.feature_dim != int(spec["feature_dim"]):
            raise OncoscopeError(
                f"bag made with encoder {info.encoder!r} ({info.feature_dim} features), but "
                f"the checkpoint was trained on {spec['encoder']!r} ({spec['feature_dim']}); "
                "make the bags with the checkpoint's encoder",
                info.path,
            )
    return items, infos


def predict_items(
    model: AttentionMIL, items: Sequence[MilItem], device: torch.device | str = "cpu"
) -> Iterator[BagPrediction | tuple[MilItem, OncoscopeError]]:
    """Each bag's prediction in fp32 with every tile, or ``(item, error)`` for a bad bag."""
    model = model.to(device)
    for item in items:
        try:
            loaded = [read_bag(path) for path in item.bags]
        except OncoscopeError as error:
            yield item, error
            continue
        features = np.concatenate([f for f, _, _ in loaded], axis=0)
        with torch.inference_mode():
            logits, attention = model(torch.from_numpy(features).to(device))
        probabilities = torch.softmax(logits.float(), dim=1)[0].cpu().numpy().astype(np.float64)
        weights = attention.float().cpu().numpy()
        bounds = np.cumsum([0] + [len(f) for f, _, _ in loaded])
        per_slide = [weights[a:b] for a, b in itertools.pairwise(bounds)]
        yield BagPrediction(item, probabilities, per_slide)


def predictions_frame(
    predictions: Sequence[BagPrediction], classes: Sequence[str], bag_level: str
) -> pd.DataFrame:
    """One row per bag: ``slide``/``patient``, ``label`` and ``split`` (when known),
    ``pred``, ``prob_<class>``."""
    rows = []
    for p in predictions:
        row: dict[str, Any] = {bag_level: p.item.name}
        if bag_level == "slide":
            row["patient"] = p.item.patient
        if p.item.label:
            row["label"], row["split"] = p.item.label, p.item.split
        row["pred"] = classes[int(np.argmax(p.probabilities))]
        row.update({f"prob_{c}": float(v) for c, v in zip(classes, p.probabilities, strict=True)})
        rows.append(row)
    return pd.DataFrame(rows)


def check_predict_folder(out: str | Path, *, overwrite: bool = False) -> list[Path]:
    """What ``--overwrite`` removes from ``out`` (a missing or empty folder: nothing).

    Raises:
        OncoscopeError: a non-empty folder without ``overwrite``; with it, a folder that is not
            an earlier ``mil predict``'s (no :data:`RECORD`).
    """
    out = Path(out)
    if not out.is_dir() or not any(out.iterdir()):
        return []
    record = out / RECORD
    if not overwrite:
        raise OncoscopeError(
            "this folder is not empty; pass --overwrite to replace an earlier mil predict "
            "there, or choose another --out",
            out,
        )
    if not record.is_file():
        raise OncoscopeError(
            f"this folder is not empty and holds no {RECORD}: it is not mil predict's to "
            "replace; choose another --out",
            out,
        )
    try:
        written = json.loads(record.read_text()).get("written", [])
    except (OSError, json.JSONDecodeError):
        written = []
    names = {"predictions.csv", RECORD, *(str(w) for w in written)}
    # only plain names inside `out`: a hand-edited record cannot reach outside it
    plain = [n for n in sorted(names) if n == Path(n).name and n not in ("", ".", "..")]
    return [out / name for name in plain if (out / name).exists()]


def predict_bags(
    checkpoint: str | Path,
    bags: str | Path,
    out: str | Path,
    *,
    labels: str | Path | None = None,
    top_k: int = 16,
    overwrite: bool = False,
    device: str = "auto",
) -> PredictResult:
    """Predict every bag and write ``predictions.csv`` and each slide's attention outputs.

    A bag that cannot be read is reported in the result's ``failures``; the others finish.

    Raises:
        OncoscopeError: a bad checkpoint, labels or bags (before any work; see
            :func:`bag_items`); an ``out`` in use (see :func:`check_predict_folder`).
    """
    out = Path(out)
    model, spec = load_mil_model(checkpoint)
    items, _ = bag_items(spec, bags, labels)
    replaced = check_predict_folder(out, overwrite=overwrite)
    chosen = "cuda" if device == "auto" and torch.cuda.is_available() else device
    chosen = "cpu" if chosen == "auto" else chosen
    for entry in replaced:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    classes = [str(c) for c in spec["classes"]]
    level = str(spec.get("bag_level", "slide"))
    result = PredictResult(out, out / "predictions.csv")
    record: dict[str, Any] = {
        "checkpoint": str(Path(checkpoint).absolute()),
        "bags": str(Path(bags).absolute()),
        "labels": str(Path(labels).absolute()) if labels else None,
        "bag_level": level,
        "top_k": top_k,
        "attention_painted": "percentile of the tile's attention within its slide",
        "complete": False,
        # written first, so that --overwrite can clear what an interrupted run left
        "written": sorted({p.stem for item in items for p in item.bags}),
    }
    _write_record(out, record)
    done: list[BagPrediction] = []
    for outcome in predict_items(model, items, chosen):
        if isinstance(outcome, tuple):
            item, error = outcome
            result.failures.append((item.name, str(error)))
            continue
        done.append(outcome)
        for path, weights in zip(outcome.item.bags, outcome.attention, strict=True):
            folder, notes = write_slide_outputs(path, weights, out / path.stem, top_k=top_k)
            result.slide_folders.append(folder)
            result.notes += [f"{path.stem}: {note}" for note in notes]
    with atomic_path(result.predictions_csv) as temporary:
        predictions_frame(done, classes, level).to_csv(temporary, index=False, float_format="%.6g")
    record.update(
        complete=True,
        failures=[{"bag": b, "problem": p} for b, p in result.failures],
        notes=result.notes,
    )
    _write_record(out, record)
    return result


def write_slide_outputs(
    bag: Path, attention: np.ndarray[Any, Any], folder: Path, *, top_k: int = 16
) -> tuple[Path, list[str]]:
    """``attention.npy``, ``attention.tif``, ``attention.json``, ``attention.png``,
    ``top_attention.geojson`` and (with the slide file) ``top_tiles.png`` of one slide;
    returns the folder and notes."""
    from oncoscope.io.slides import open_slide

    _, coords, info = read_bag(bag)
    layout = heatmap.TileLayout.of(info.attrs)
    notes: list[str] = []
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "attention.npy") as temporary, temporary.open("wb") as handle:
        np.save(handle, attention.astype(np.float32))
    chosen = heatmap.top_tiles(attention, top_k)
    heatmap.write_top_regions(coords, chosen, layout, folder / "top_attention.geojson")
    slide_path = _slide_file(info, bag)
    slide = None
    if slide_path is None:
        notes.append(f"slide file {info.slide} not found: heatmap over white, no top_tiles.png")
    else:
        try:
            slide = open_slide(slide_path, mpp=layout.slide_mpp)
        except OncoscopeError as error:
            notes.append(f"slide file unreadable ({error}): heatmap over white, no top_tiles.png")
    try:
        slide_wh = slide.dimensions if slide is not None else (0, 0)
        painted = heatmap.attention_map(
            heatmap.attention_percentiles(attention), coords, layout, slide_wh
        )
        heatmap.write_attention_tiff(painted, folder / "attention.tif", layout)
        write_json(
            folder / ATTENTION_RECORD,
            heatmap.attention_record(painted, layout, info.slide, slide_path, slide_wh, bag),
            indent=2,
        )
        thumbnail, downsample = slide.overview(heatmap.FIGURE_PX) if slide else (None, None)
        heatmap.write_attention_png(
            painted, folder / "attention.png", layout, thumbnail, downsample
        )
        if slide is not None:
            tile_px = int(info.attrs["tile_px"])
            tiles = [
                slide.read((int(x), int(y)), (tile_px, tile_px), mpp=float(info.attrs["mpp"]))
                for x, y in coords[chosen]
            ]
            captions = [f"#{i + 1} a={attention[t]:.3g}" for i, t in enumerate(chosen)]
            heatmap.write_gallery(tiles, captions, folder / "top_tiles.png")
    finally:
        if slide is not None:
            slide.close()
    return folder, notes


def _write_record(out: Path, record: dict[str, Any]) -> None:
    write_json(out / RECORD, record, indent=2)


def _slide_file(info: BagInfo, bag: Path) -> Path | None:
    """The slide file the bag names: as recorded, or relative to the bag's folder."""
    recorded = Path(info.slide)
    for candidate in (recorded, bag.parent / recorded):
        if candidate.is_file():
            return candidate
    return None
