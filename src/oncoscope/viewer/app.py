"""The viewer's web application (FastAPI): pages, deep-zoom tiles, overlays and JSON over DIR.

Only files inside the served folder are sent (:mod:`.safe_path`); a slide or CT volume that an
output inside it names (``summary.json``'s ``slide``, a manifest's ``source``) is read to render
tiles and slices, never sent as a file. Client errors are 4xx: a path outside the folder or a
missing file 404 (a name or path too long for the file system too), a malformed value 400 or
422; never 500.
"""

from __future__ import annotations

import errno
import functools
import html
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from string import Template
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from oncoscope.errors import InvalidOptionError, OncoscopeError
from oncoscope.viewer import ct_slices, overlays
from oncoscope.viewer.assets import (
    INSTALL_HINT,
    OPENSEADRAGON_DIR,
    WEB_DIR,
    openseadragon_version,
)
from oncoscope.viewer.safe_path import OutsideFolderError, inside_file, relative_to_root
from oncoscope.viewer.scan import Catalog, CtPatient, SlideEntry, read_json, resolve_reference, scan
from oncoscope.viewer.tiles import FORMATS, SlideCache

PNG = "image/png"
#: Longer side of the slide thumbnails of the index page (pixels).
THUMBNAIL_PX = 320


class Viewer:
    """The served folder's catalog (rescanned on each index request) and open slides/volumes."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.slides = SlideCache()
        self.volumes = ct_slices.VolumeCache()
        self._catalog = scan(self.root)
        self._lock = threading.Lock()

    def rescan(self) -> Catalog:
        catalog = scan(self.root)
        with self._lock:
            self._catalog = catalog
        return catalog

    @property
    def catalog(self) -> Catalog:
        with self._lock:
            return self._catalog

    def slide_entry(self, key: str) -> SlideEntry:
        entry = self.catalog.slide(key)
        if entry is None:
            raise HTTPException(404, f"no slide {key!r} in the served folder")
        return entry

    def patient(self, key: str) -> CtPatient:
        patient = self.catalog.patient(key)
        if patient is None:
            raise HTTPException(404, f"no CT patient {key!r} in the served folder")
        return patient

    def url(self, path: Path) -> str | None:
        rel = relative_to_root(self.root, path)
        return f"/files/{rel}" if rel is not None and path.is_file() else None


def create_app(root: str | Path) -> FastAPI:
    """The web application serving ``root`` (see the module docstring).

    Raises:
        OncoscopeError: ``root`` is not a folder.
    """
    viewer = Viewer(Path(root))
    app = FastAPI(title="oncoscope viewer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.viewer = viewer
    _add_error_handlers(app)
    _add_page_routes(app, viewer)
    _add_slide_routes(app, viewer)
    _add_ct_routes(app, viewer)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Bad requests and paths outside the folder as 4xx; failures of this machine stay 500s."""

    @app.exception_handler(OncoscopeError)
    async def _oncoscope_error(_: Request, error: OncoscopeError) -> JSONResponse:
        status = 400 if isinstance(error, InvalidOptionError) else 404
        if isinstance(error, OutsideFolderError):
            return JSONResponse({"detail": "not found"}, status_code=404)
        return JSONResponse({"detail": str(error)}, status_code=status)

    @app.exception_handler(OSError)
    async def _os_error(_: Request, error: OSError) -> JSONResponse:
        if error.errno == errno.ENAMETOOLONG:  # a client's path no file can have
            return JSONResponse({"detail": "not found"}, status_code=404)
        raise error  # a failure of this machine: a 500, logged with its traceback


#: The pages: URL to (title, body fragment in ``web/``), each set in the shell ``web/page.html``.
PAGES = {
    "/": ("oncoscope viewer", "index.html"),
    "/slide": ("slide · oncoscope viewer", "slide.html"),
    "/ct": ("CT · oncoscope viewer", "ct.html"),
}


def _add_page_routes(app: FastAPI, viewer: Viewer) -> None:
    """The HTML pages, their scripts and styles, OpenSeadragon, the folder's files, the index."""

    @app.get("/static/{rel:path}")
    def static(rel: str) -> FileResponse:
        return FileResponse(inside_file(WEB_DIR, rel))

    @app.get("/osd/{rel:path}")
    def openseadragon(rel: str) -> FileResponse:
        return FileResponse(inside_file(OPENSEADRAGON_DIR, rel))

    for url, (title, body) in PAGES.items():
        app.add_api_route(url, _page_route(title, body), response_class=HTMLResponse)

    @app.get("/files/{rel:path}")
    def files(rel: str) -> FileResponse:
        return FileResponse(inside_file(viewer.root, rel))

    @app.get("/api/index")
    def index() -> dict[str, Any]:
        return _index(viewer, viewer.rescan())


def _add_slide_routes(app: FastAPI, viewer: Viewer) -> None:
    """A slide's facts, deep-zoom tiles, thumbnail, overlays and probe."""

    @app.get("/api/slide")
    def slide(key: str) -> dict[str, Any]:
        return _slide(viewer, viewer.slide_entry(key))

    @app.get("/dz/{key:path}.dzi")
    def dzi(key: str) -> Response:
        opened = viewer.slides.get(_slide_file(viewer.slide_entry(key)))
        return Response(opened.dzi(), media_type="application/xml")

    @app.get("/dz/{key:path}_files/{level}/{tile}")
    def tile(key: str, level: str, tile: str) -> Response:
        address, _, image_format = tile.partition(".")
        col_text, _, row_text = address.partition("_")
        try:
            level_, col, row = int(level), int(col_text), int(row_text)
        except ValueError:
            raise HTTPException(400, "tile address must be LEVEL/COL_ROW.jpeg") from None
        if image_format not in FORMATS:
            raise HTTPException(400, f"tile format must be one of {FORMATS}")
        opened = viewer.slides.get(_slide_file(viewer.slide_entry(key)))
        data = opened.tile(level_, col, row, image_format)
        headers = {"Cache-Control": "max-age=3600"}
        return Response(data, media_type=f"image/{image_format}", headers=headers)

    @app.get("/api/slide/thumbnail.png")
    def thumbnail(key: str) -> Response:
        opened = viewer.slides.get(_slide_file(viewer.slide_entry(key)))
        image, _ = opened.slide.thumbnail(THUMBNAIL_PX)
        return Response(overlays.png_bytes(image), media_type=PNG)

    @app.get("/api/slide/overlay.png")
    def slide_overlay(
        key: str,
        kind: str = Query(pattern="^(heatmap|segmentation)$"),
        cls: str = "",
        classes: str | None = None,
    ) -> Response:
        entry = viewer.slide_entry(key)
        names, colours = _classes_of(entry)
        probabilities = _probabilities(entry)
        if kind == "heatmap":
            if cls not in names:
                raise HTTPException(400, f"class must be one of {names}")
            rgba = overlays.heatmap_rgba(probabilities[..., names.index(cls)])
        else:
            wanted = names if classes is None else [c for c in classes.split(",") if c]
            unknown = [c for c in wanted if c not in names]
            if unknown:
                raise HTTPException(400, f"unknown classes {unknown}; classes are {names}")
            labels = overlays.argmax_classes(probabilities)
            visible = [names.index(c) for c in wanted]
            rgba = overlays.segmentation_rgba(labels, colours, visible)
        return Response(overlays.png_bytes(overlays.enlarge(rgba)), media_type=PNG)

    @app.get("/api/slide/attention.png")
    def attention_overlay(key: str, index: int = Query(0, ge=0)) -> Response:
        entry = viewer.slide_entry(key)
        if index >= len(entry.attention):
            raise HTTPException(404, "no such attention map for this slide")
        tif = str(PurePosixPath(entry.attention[index]).with_name("attention.tif"))
        rgba = overlays.heatmap_rgba(_cached_attention(inside_file(viewer.root, tif)))
        return Response(overlays.png_bytes(overlays.enlarge(rgba)), media_type=PNG)

    @app.get("/api/slide/probe")
    def probe(key: str, x: float, y: float) -> dict[str, Any]:
        entry = viewer.slide_entry(key)
        names, _ = _classes_of(entry)
        grid = overlays.Grid.from_summary(entry.summary or {})
        cell = grid.cell_at(x, y)
        result: dict[str, Any] = {"x": x, "y": y, "cell": cell, "probabilities": None}
        if cell is not None:
            values = np.asarray(_probabilities(entry)[cell[0], cell[1]], dtype=float)
            if np.isfinite(values).any():
                result["probabilities"] = {
                    n: (float(v) if math.isfinite(v) else None)
                    for n, v in zip(names, values, strict=True)
                }
        return result


def _add_ct_routes(app: FastAPI, viewer: Viewer) -> None:
    """A CT patient's facts, windowed slices, mask and candidate contours, and CAM maps."""

    @app.get("/api/ct")
    def ct(key: str) -> dict[str, Any]:
        return _ct_patient(viewer, viewer.patient(key))

    @app.get("/api/ct/slice.png")
    def ct_slice(key: str, index: int, window: str = "liver") -> Response:
        patient = viewer.patient(key)
        if patient.volume is None:
            raise HTTPException(404, "the CT volume of this patient is not at hand")
        volume = viewer.volumes.get(patient.volume)
        return Response(
            overlays.png_bytes(ct_slices.windowed_slice(volume, index, window)), media_type=PNG
        )

    @app.get("/api/ct/mask.png")
    def ct_mask(key: str, index: int, kind: str = Query(pattern="^(liver|lesion)$")) -> Response:
        mask = _mask(viewer, viewer.patient(key), index, kind)
        rgba = overlays.contour_rgba(mask, ct_slices.MASK_COLOURS[kind], thickness_px=2)
        return Response(overlays.png_bytes(rgba), media_type=PNG)

    @app.get("/api/ct/candidates.png")
    def ct_candidates(key: str, index: int, folder: str) -> Response:
        patient = viewer.patient(key)
        if folder not in {run["folder"] for run in _candidates_for(viewer, patient)}:
            raise HTTPException(404, "no oncoscope locate output of this patient's volume there")
        path = inside_file(viewer.root, f"{folder}/candidates.nii.gz")
        labels = _candidate_labels(path, path.stat().st_mtime_ns)
        volume = viewer.volumes.get(patient.volume) if patient.volume is not None else None
        if volume is None or labels.shape != volume.shape:
            raise HTTPException(404, "the candidate map is not on this patient's volume grid")
        mask = labels.array[ct_slices.slice_index_in(labels, index)] > 0
        rgba = overlays.contour_rgba(mask, CANDIDATE_COLOUR, thickness_px=2)
        return Response(overlays.png_bytes(rgba), media_type=PNG)

    @app.get("/api/cam.png")
    def cam(explain: str, row: int) -> Response:
        csv = inside_file(viewer.root, explain)
        table = _read_table(csv)
        if not 0 <= row < len(table) or "map_npy" not in table.columns:
            raise HTTPException(404, "no such explain row")
        map_path = inside_file(viewer.root, _rel_near(viewer, csv, str(table["map_npy"].iloc[row])))
        try:
            values = np.load(map_path, allow_pickle=False)
        except (OSError, ValueError):
            raise HTTPException(404, "CAM map is not a NumPy array file") from None
        if values.ndim != 2 or values.dtype.kind not in "fiu":
            raise HTTPException(404, "CAM map is not a 2-D array")
        return Response(
            overlays.png_bytes(overlays.heatmap_rgba(values, "jet", fade=True)), media_type=PNG
        )


def _page_route(title: str, body: str) -> Callable[[], HTMLResponse]:
    def page() -> HTMLResponse:
        return _page(title, body)

    return page


def _page(title: str, body: str) -> HTMLResponse:
    """The page whose body is the fragment ``web/<body>``, in the shared shell ``page.html``."""
    shell = Template((WEB_DIR / "page.html").read_text(encoding="utf-8"))
    fragment = (WEB_DIR / body).read_text(encoding="utf-8")
    return HTMLResponse(shell.substitute(title=html.escape(title), body=fragment))


def _slide_file(entry: SlideEntry) -> Path:
    if entry.slide_path is None or not entry.slide_path.is_file():
        raise HTTPException(404, "the slide file of this output is not at hand")
    return entry.slide_path


def _classes_of(entry: SlideEntry) -> tuple[list[str], list[str]]:
    summary = entry.summary or {}
    names = summary.get("class_names") or list(summary.get("classes", {}))
    if not names:
        raise HTTPException(404, "this slide has no inference")
    names = [str(n) for n in names]
    return names, overlays.class_colours(names, summary.get("colors") or {})


def _probabilities(entry: SlideEntry) -> np.ndarray[Any, np.dtype[np.float32]]:
    if entry.output_dir is None:
        raise HTTPException(404, "this slide has no inference")
    path = entry.output_dir / "probabilities.npy"
    if not path.is_file():
        raise HTTPException(404, "no probabilities.npy beside summary.json")
    names, _ = _classes_of(entry)
    return _cached_probabilities(path, path.stat().st_mtime_ns, len(names))


def _cached_attention(path: Path) -> np.ndarray[Any, np.dtype[np.float32]]:
    return _attention_map(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _attention_map(path: Path, mtime_ns: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    return overlays.load_attention_map(path)


@functools.lru_cache(maxsize=8)
def _cached_probabilities(
    path: Path, mtime_ns: int, n_classes: int
) -> np.ndarray[Any, np.dtype[np.float32]]:
    return overlays.load_probabilities(path, n_classes)


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, keep_default_na=False, dtype=str)
    except (OSError, ValueError) as error:
        raise HTTPException(404, f"unreadable table: {error}") from None


def _rel_near(viewer: Viewer, table: Path, reference: str) -> str:
    """A path written in a table (relative to the table, or absolute) relative to the root."""
    found = resolve_reference(reference, table.parent, viewer.root)
    rel = relative_to_root(viewer.root, found) if found is not None else None
    if rel is None:
        raise HTTPException(404, "file named in the table is not in the served folder")
    return rel


def _index(viewer: Viewer, catalog: Catalog) -> dict[str, Any]:
    def json_of(rel: str) -> dict[str, Any] | None:
        try:
            return read_json(viewer.root / rel)
        except (OSError, ValueError):
            return None

    explains = []
    problems = list(catalog.problems)
    for rel in catalog.explains:
        try:
            table = _read_table(viewer.root / rel)
        except HTTPException as error:
            problems.append((rel, str(error.detail)))
            continue
        examples = _explain_rows(viewer, rel, table)[:12]
        explains.append({"path": rel, "rows": len(table), "examples": examples})
    return {
        "root": str(viewer.root),
        "openseadragon": openseadragon_version() is not None,
        "install_hint": INSTALL_HINT,
        "slides": [
            {
                "key": e.key,
                "name": e.name,
                "inference": e.summary is not None,
                "attention": len(e.attention),
                "slide_found": e.slide_path is not None,
                "classes": (e.summary or {}).get("classes", {}),
                "thumbnail": f"/api/slide/thumbnail.png?key={quote(e.key)}"
                if e.slide_path is not None
                else None,
            }
            for e in catalog.slides
        ],
        "ct_patients": [
            {
                "key": p.key,
                "patient_id": p.patient_id,
                "manifest": relative_to_root(viewer.root, p.manifest),
                "slices": len(p.rows),
                "tumour_slices": sum(1 for r in p.rows if str(r.get("label")) == "tumour"),
                "volume_found": p.volume is not None,
            }
            for p in catalog.ct_patients
        ],
        "reports": [
            {"path": rel, "url": f"/files/{rel}", "figures": _figures(viewer, rel)}
            for rel in catalog.reports
        ],
        "explains": explains,
        "couinauds": [
            {"path": rel, "data": json_of(rel), "png": _beside(viewer, rel, "couinaud.png")}
            for rel in catalog.couinauds
        ],
        "scales": [{"path": rel, "data": json_of(rel)} for rel in catalog.scales],
        "problems": [{"path": p, "problem": m} for p, m in problems],
    }


def _beside(viewer: Viewer, rel: str, name: str) -> str | None:
    return viewer.url((viewer.root / rel).parent / name)


def _figures(viewer: Viewer, report_rel: str) -> list[str]:
    folder = (viewer.root / report_rel).parent / "figures"
    if not folder.is_dir():
        return []
    return [u for p in sorted(folder.glob("*.png")) if (u := viewer.url(p)) is not None]


def _slide(viewer: Viewer, entry: SlideEntry) -> dict[str, Any]:
    summary = entry.summary or {}
    result: dict[str, Any] = {
        "key": entry.key,
        "name": entry.name,
        "summary": summary or None,
        "slide_file": str(entry.slide_path) if entry.slide_path else summary.get("slide"),
        "slide_found": entry.slide_path is not None and entry.slide_path.is_file(),
        "info": None,
        "classes": [],
        "grid": None,
        "probabilities": False,
        "images": {},
        "scale": None,
        "dzi": f"/dz/{entry.key}.dzi",
        "colormap": overlays.colormap_stops(),
    }
    if result["slide_found"]:
        try:
            result["info"] = viewer.slides.get(_slide_file(entry)).info()
        except OncoscopeError as error:
            result["slide_found"], result["slide_error"] = False, str(error)
    if entry.summary is not None:
        names, colours = _classes_of(entry)
        areas = summary.get("classes")
        areas = areas if isinstance(areas, dict) else {}
        result["classes"] = [
            {"name": n, "colour": c, **(areas[n] if isinstance(areas.get(n), dict) else {})}
            for n, c in zip(names, colours, strict=True)
        ]
        try:
            x, y, w, h = overlays.Grid.from_summary(summary).extent_level0()
            result["grid"] = {"x": x, "y": y, "width": w, "height": h}
        except InvalidOptionError:
            result["grid"] = None
        assert entry.output_dir is not None
        result["probabilities"] = (entry.output_dir / "probabilities.npy").is_file()
        for name in ("heatmap.png", "segmentation.png", "regions.geojson", "summary.json"):
            url = viewer.url(entry.output_dir / name)
            if url:
                result["images"][name] = url
    result["attention"] = [_attention(viewer, rel) for rel in entry.attention]
    if entry.scale is not None:
        try:
            result["scale"] = read_json(viewer.root / entry.scale)
        except (OSError, ValueError):
            result["scale"] = None
    return result


def _attention(viewer: Viewer, rel: str) -> dict[str, Any]:
    """One ``mil predict`` attention map of a slide: the prediction folder it belongs to, its
    level-0 extent and its files."""
    folder = (viewer.root / rel).parent
    result: dict[str, Any] = {"run": relative_to_root(viewer.root, folder.parent), "grid": None}
    try:
        x, y, w, h = overlays.Grid.from_summary(read_json(viewer.root / rel)).extent_level0()
        result["grid"] = {"x": x, "y": y, "width": w, "height": h}
    except (OSError, ValueError, InvalidOptionError):
        result["grid"] = None
    names = ("attention.png", "top_tiles.png", "top_attention.geojson", "attention.json")
    result["files"] = {n: u for n in names if (u := viewer.url(folder / n)) is not None}
    return result


def _explain_rows(viewer: Viewer, rel: str, table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of an explain.csv with URLs of their overlay and CAM map, and the image's path."""
    csv = viewer.root / rel
    rows = []
    for number, record in enumerate(table.to_dict("records")):
        image = (
            resolve_reference(str(record.get("image", "")), csv.parent, viewer.root)
            if record.get("image")
            else None
        )
        overlay = (
            resolve_reference(str(record.get("overlay_png", "")), csv.parent, viewer.root)
            if record.get("overlay_png")
            else None
        )
        rows.append(
            {
                **{k: record.get(k) for k in ("method", "layer", "target", "pred", "prob")},
                "label": str(record.get("label") or "") or None,  # the truth, when known
                "image": str(record.get("image", "")),
                "image_path": image,
                "overlay": viewer.url(overlay) if overlay else None,
                "cam": f"/api/cam.png?explain={quote(rel)}&row={number}"
                if record.get("map_npy")
                else None,
            }
        )
    return rows


def _same_slice(a: Path | None, b: Path) -> bool:
    """Same file, or (paths written on another machine) the same ``patient-N/slice-K.png``."""
    if a is None:
        return False
    return a == b or a.parts[-2:] == b.parts[-2:]


def _ct_patient(viewer: Viewer, patient: CtPatient) -> dict[str, Any]:
    base = patient.manifest.parent
    by_index: dict[int, dict[str, Any]] = {}
    for row in patient.rows:
        index = int(row["slice_index"])
        png = resolve_reference(str(row.get("path", "")), base, viewer.root)
        by_index[index] = {
            "index": index,
            "label": row.get("label"),
            "split": row.get("split"),
            "max_section_mm": row.get("max_section_mm"),
            "lesion_count": row.get("lesion_count"),
            "png": viewer.url(png) if png else None,
            "png_path": png,
            "prediction": None,
            "cams": [],
        }
    catalog = viewer.catalog
    for rel in catalog.explains:
        for item in _explain_rows(viewer, rel, _read_table(viewer.root / rel)):
            for entry in by_index.values():
                if entry["png_path"] is not None and _same_slice(
                    item["image_path"], entry["png_path"]
                ):
                    entry["cams"].append({k: v for k, v in item.items() if k != "image_path"})
                    if item.get("pred") and entry["prediction"] is None:
                        entry["prediction"] = {
                            "pred": item["pred"],
                            "prob": item.get("prob"),
                            "source": rel,
                        }
    for rel in catalog.predictions:
        _attach_predictions(viewer, rel, patient, by_index)
    volume_info = None
    if patient.volume is not None:
        volume = viewer.volumes.get(patient.volume)
        volume_info = {"shape": list(volume.shape), "spacing_mm": list(volume.spacing_mm)}
        indices = list(range(volume.shape[0]))
    else:
        indices = sorted(by_index)
    slices = [
        {
            k: v
            for k, v in by_index.get(
                i, {"index": i, "label": None, "cams": [], "prediction": None}
            ).items()
            if k != "png_path"
        }
        for i in indices
    ]
    window = str(patient.rows[0].get("window", "")) if patient.rows else ""
    return {
        "key": patient.key,
        "patient_id": patient.patient_id,
        "manifest": relative_to_root(viewer.root, patient.manifest),
        "mode": "volume" if patient.volume is not None else "png",
        "volume": volume_info,
        "slices": slices,
        "windows": ct_slices.window_presets(),
        "default_window": window
        if window in {w["name"] for w in ct_slices.window_presets()}
        else "liver",
        "masks": {
            "volume": patient.mask is not None,
            "liver": patient.mask is not None or any(r.get("liver_mask") for r in patient.rows),
            "lesion": patient.mask is not None or any(r.get("lesion_mask") for r in patient.rows),
        },
        "mask_colours": ct_slices.MASK_COLOURS,
        "couinaud": _couinaud_for(viewer, patient),
        "candidates": _candidates_for(viewer, patient),
        "candidate_colour": CANDIDATE_COLOUR,
    }


def _attach_predictions(
    viewer: Viewer, rel: str, patient: CtPatient, by_index: dict[int, dict[str, Any]]
) -> None:
    table = _read_table(viewer.root / rel)
    if "pred" not in table.columns:
        return
    csv = viewer.root / rel
    probs = [c for c in table.columns if c.startswith("prob_")]
    for record in table.to_dict("records"):
        target: dict[str, Any] | None = None
        if "patient_id" in record and "slice_index" in record:
            if (
                str(record["patient_id"]) == patient.patient_id
                and str(record["slice_index"]).isdigit()
            ):
                target = by_index.get(int(record["slice_index"]))
        elif record.get("path"):
            path = resolve_reference(
                str(record["path"]), csv.parent, viewer.root
            ) or resolve_reference(str(record["path"]), patient.manifest.parent, viewer.root)
            target = next(
                (
                    e
                    for e in by_index.values()
                    if e["png_path"] is not None and _same_slice(path, e["png_path"])
                ),
                None,
            )
        if target is not None:
            target["prediction"] = {
                "pred": record["pred"],
                "prob": max(
                    (float(record[c]) for c in probs if record[c] not in ("", None)), default=None
                ),
                "source": rel,
            }


def _readable_json(viewer: Viewer, rels: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each JSON file of ``rels`` (relative to the root) that can be read, with its contents."""
    for rel in rels:
        try:
            data = read_json(viewer.root / rel)
        except (OSError, ValueError):
            continue
        yield rel, data


def _couinaud_for(viewer: Viewer, patient: CtPatient) -> list[dict[str, Any]]:
    found = []
    for rel, data in _readable_json(viewer, viewer.catalog.couinauds):
        named = str(data.get("patient_id", ""))
        volume = str(data.get("volume", data.get("source", "")))
        same_volume = patient.volume is not None and Path(volume).name == patient.volume.name
        if named == patient.patient_id or same_volume:
            found.append({"path": rel, "data": data, "png": _beside(viewer, rel, "couinaud.png")})
    return found


#: Contour colour of ``oncoscope locate``'s candidates.
CANDIDATE_COLOUR = "#ffd60a"


def _candidates_for(viewer: Viewer, patient: CtPatient) -> list[dict[str, Any]]:
    """The ``oncoscope locate`` outputs of this patient's volume: folder, settings, candidates."""
    if patient.volume is None:
        return []
    found = []
    for rel, record in _readable_json(viewer, viewer.catalog.locates):
        inputs = record.get("inputs")
        for name, summary in (inputs if isinstance(inputs, dict) else {}).items():
            if not isinstance(summary, dict) or summary.get("kind") != "volume":
                continue
            folder = (viewer.root / rel).parent / str(name)
            source = resolve_reference(str(summary.get("path", "")), folder.parent, viewer.root)
            if source is None or source.resolve() != patient.volume.resolve():
                continue
            if not (folder / "candidates.nii.gz").is_file():
                continue
            table = _read_table(folder / "candidates.csv")
            found.append(
                {
                    "folder": relative_to_root(viewer.root, folder),
                    "threshold": record.get("threshold"),
                    "threshold_source": record.get("threshold_source"),
                    "approximate": bool((summary.get("couinaud") or {}).get("approximate")),
                    "rows": table.to_dict("records"),
                }
            )
    return found


@functools.lru_cache(maxsize=4)
def _candidate_labels(path: Path, mtime_ns: int) -> Any:
    from oncoscope.io.volumes import read_label_mask

    try:
        return read_label_mask(path, max_label=65535)
    except OncoscopeError as error:
        raise HTTPException(404, f"unreadable candidate map: {error.message}") from None


def _mask(
    viewer: Viewer, patient: CtPatient, index: int, kind: str
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    if patient.mask is not None:
        return ct_slices.mask_slice(viewer.volumes.get(patient.mask, mask=True), index, kind)
    row = next((r for r in patient.rows if int(r["slice_index"]) == index), None)
    column = f"{kind}_mask"
    if row is None or not row.get(column):
        raise HTTPException(404, f"no {kind} mask for slice {index}")
    path = inside_file(viewer.root, _rel_near(viewer, patient.manifest, str(row[column])))
    return ct_slices.mask_from_png(path)
