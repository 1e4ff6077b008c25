"""Explain image files with a checkpoint: overlays, raw maps and an ``explain.csv`` index.

For each image: ``OUT/maps/KEY.METHOD.npy`` (``(H, W)`` float32 in ``0..1`` at the image's own
resolution) and ``OUT/overlays/KEY.METHOD.png`` (the map over the image, enlarged when small,
with a colour bar of the 0-1 scale, the true label when known, the prediction, and the true
lesion outlined in white when a lesion mask is given), where ``KEY`` is the
image's path relative to the images' common folder (or the manifest's folder) without its
suffix, so images of the same name in different patient folders do not collide.
``OUT/explain.csv`` has one row per image: ``image, label, method, layer, target, pred, prob,
prob_pred, map_npy, overlay_png`` (paths relative to ``OUT``; ``prob`` is the probability of
the explained class, ``prob_pred`` that of the predicted one). An unreadable image is reported
and the others still explained.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from skimage.transform import resize

from oncoscope.batch import TableReport
from oncoscope.ct.body import bodies_on_grid
from oncoscope.dataset.images import open_image
from oncoscope.dataset.manifest import read_manifest, write_manifest
from oncoscope.errors import CorruptFileError, InvalidOptionError, ManifestError, OncoscopeError
from oncoscope.explain.cam import explain_batch
from oncoscope.explain.overlay import METHOD_NAMES, figure, overlay, save_png
from oncoscope.io.atomic import atomic_path
from oncoscope.models.spec import ModelSpec
from oncoscope.train.checkpoint import LoadedModel, load_model

#: Columns of ``explain.csv``.
EXPLAIN_COLUMNS = (
    "image",
    "label",
    "method",
    "layer",
    "target",
    "pred",
    "prob",
    "prob_pred",
    "map_npy",
    "overlay_png",
)


@dataclass
class ImageMap:
    """One image explained.

    Attributes:
        path: the image file.
        pixels: ``(H, W)`` or ``(H, W, 3)`` uint8, as the model saw it before resizing.
        heat: ``(H, W)`` float32 map in ``0..1`` at the image's resolution.
        target: explained class name.
        pred: predicted class name.
        prob: probability of ``target``.
        prob_pred: probability of ``pred``.
        layer: the layer(s) read.
    """

    path: str
    pixels: npt.NDArray[np.uint8]
    heat: npt.NDArray[np.float32]
    target: str
    pred: str
    prob: float
    prob_pred: float
    layer: str


@dataclass
class ExplainReport(TableReport):
    """What :func:`explain_images` wrote (:class:`~oncoscope.batch.TableReport`: folder,
    ``explain.csv`` rows, the images it could not explain) and ``explain.csv`` (None when no
    image could be explained)."""

    csv: Path | None = None


def iter_maps(
    model: torch.nn.Module,
    spec: ModelSpec,
    paths: Sequence[str],
    *,
    method: str = "gradcam",
    layers: Sequence[str] = (),
    stage: int = -1,
    targets: Sequence[str | None] | None = None,
    batch_size: int = 8,
) -> Iterator[tuple[str, ImageMap | OncoscopeError]]:
    """Explain images batch by batch; yield each path with its map or its error.

    Args:
        model: the classifier, from :func:`oncoscope.train.checkpoint.load_model`.
        spec: its checkpoint's spec (classes, input channels and size, normalisation).
        paths: image files.
        method, layers, stage: see :func:`oncoscope.explain.cam.explain_batch`.
        targets: class name to explain per image (None = its predicted class); default all None.
        batch_size: images per forward pass.

    Raises:
        InvalidOptionError: a target class the model does not have; bad method or layer.
        OncoscopeError: the model cannot take the images (channels or size).
    """
    classes = list(spec.classes)
    wanted = list(targets) if targets is not None else [None] * len(paths)
    unknown = sorted({str(t) for t in wanted if t is not None and str(t) not in classes})
    if unknown:
        raise InvalidOptionError(f"target classes {unknown} are not among the model's {classes}")
    transform = spec.eval_transform()
    mode = "L" if spec.in_chans == 1 else "RGB"
    for start in range(0, len(paths), max(batch_size, 1)):
        batch: list[tuple[str, npt.NDArray[np.uint8], str | None]] = []
        for path, target in zip(
            paths[start : start + batch_size], wanted[start : start + batch_size], strict=True
        ):
            try:
                with open_image(path) as image:
                    pixels = np.array(image.convert(mode))
            except (OSError, ValueError) as error:
                yield path, CorruptFileError(f"cannot read image ({error})", path)
                continue
            batch.append((path, pixels, target))
        if not batch:
            continue
        tensors = torch.stack([transform(_chw(pixels)) for _, pixels, _ in batch])
        indices = None
        if any(t is not None for _, _, t in batch):
            indices = [classes.index(t) if t is not None else -1 for _, _, t in batch]
        foreground = None
        if spec.ct_windows and method == "guided":  # it stays inside the patient's body
            foreground = bodies_on_grid([p for _, p, _ in batch], spec.image_size)
        try:
            result = _explain(model, tensors, method, layers, stage, indices, foreground)
        except RuntimeError as error:
            raise OncoscopeError(
                f"model {spec.model} cannot take images of shape {tuple(tensors.shape[1:])} "
                f"({str(error).splitlines()[0][:160]})"
            ) from None
        for row, (path, pixels, _) in enumerate(batch):
            target = result.targets[row]
            pred = int(result.probs[row].argmax())
            heat = resize(result.maps[row], pixels.shape[:2], order=1, preserve_range=True)
            yield (
                path,
                ImageMap(
                    path=path,
                    pixels=pixels,
                    heat=np.clip(heat, 0.0, 1.0).astype(np.float32),
                    target=classes[target],
                    pred=classes[pred],
                    prob=float(result.probs[row, target]),
                    prob_pred=float(result.probs[row, pred]),
                    layer=result.layer,
                ),
            )


def explain_images(
    checkpoint: str | Path,
    images: Sequence[str | Path],
    out_dir: str | Path,
    *,
    method: str = "gradcam",
    layers: Sequence[str] = (),
    stage: int = -1,
    target: str | None = None,
    batch_size: int = 8,
    keys: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    lesion_masks: Sequence[str | None] | None = None,
    on_image: Callable[[str, str | None], None] | None = None,
    manifest: str | Path | None = None,
    loaded: LoadedModel | None = None,
) -> ExplainReport:
    """Explain image files and write maps, overlays and ``explain.csv`` (see module docstring).

    Args:
        checkpoint: an oncoscope training checkpoint.
        images: image files.
        out_dir: output folder.
        method, layers, stage: see :func:`oncoscope.explain.cam.explain_batch`.
        target: class name to explain in every image (default: each image's predicted class).
        batch_size: images per forward pass.
        keys: output name of each image (default: path relative to the images' common folder).
        labels: true label of each image, copied to ``explain.csv`` (e.g. from a manifest) and
            printed on its overlay.
        lesion_masks: per image, a lesion mask file (non-zero = lesion, e.g. the manifest's
            ``lesion_mask``) outlined in white on its overlay, or None. An unreadable mask is
            reported among the failures and the overlay drawn without it.
        on_image: called after each image with ``(path, error message or None)``.
        manifest: the manifest the images come from; refused when its slices were prepared
            with another CT chain than the checkpoint's (``ct prepare --denoise/--roi``).
        loaded: ``checkpoint`` already loaded (:func:`load_model`), so a command that needs
            the model for more than this reads the file once; else it is read here.

    Returns:
        The :class:`ExplainReport`; ``csv`` is None when no image could be explained.

    Raises:
        OncoscopeError: a bad checkpoint, method, layer or target; images the model cannot take;
            a ``manifest`` prepared with another chain.
    """
    out = Path(out_dir)
    paths = [str(p) for p in images]
    if not paths:
        raise InvalidOptionError("no images to explain")
    names = list(keys) if keys is not None else image_keys(paths)
    key_of = dict(zip(paths, names, strict=True))
    label_of = dict(zip(paths, labels, strict=True)) if labels is not None else {}
    mask_of = dict(zip(paths, lesion_masks, strict=True)) if lesion_masks is not None else {}
    model, spec = loaded if loaded is not None else load_model(checkpoint)
    if manifest is not None:
        from oncoscope.ct.chain import check_manifest_chain

        check_manifest_chain(spec, manifest)
    report = ExplainReport(out_dir=out)
    slug = method.replace("+", "p")
    for path, outcome in iter_maps(
        model,
        spec,
        paths,
        method=method,
        layers=layers,
        stage=stage,
        targets=[target] * len(paths),
        batch_size=batch_size,
    ):
        if isinstance(outcome, OncoscopeError):
            report.failures.append((path, outcome.message))
            if on_image:
                on_image(path, outcome.message)
            continue
        map_path = out / "maps" / f"{key_of[path]}.{slug}.npy"
        overlay_path = out / "overlays" / f"{key_of[path]}.{slug}.png"
        with atomic_path(map_path) as temporary:
            np.save(temporary, outcome.heat)
        lesions = None
        mask_file = mask_of.get(path)
        if mask_file:
            try:
                lesions = _lesion_outline(mask_file, outcome.pixels.shape[:2])
            except CorruptFileError as error:
                report.failures.append((mask_file, f"{error.message}; drawn without it"))
        label = label_of.get(path, "")
        save_png(
            _figure(outcome, method, label, lesions),
            overlay_path,
            {"truth": label, "prediction": outcome.pred, "target": outcome.target, "map": method},
        )
        report.rows.append(
            {
                "image": _relative(path, out),
                "label": label_of.get(path, ""),
                "method": method,
                "layer": outcome.layer,
                "target": outcome.target,
                "pred": outcome.pred,
                "prob": round(outcome.prob, 6),
                "prob_pred": round(outcome.prob_pred, 6),
                "map_npy": map_path.relative_to(out).as_posix(),
                "overlay_png": overlay_path.relative_to(out).as_posix(),
            }
        )
        if on_image:
            on_image(path, None)
    if report.rows:
        report.csv = write_manifest(report.rows, out / "explain.csv", EXPLAIN_COLUMNS)
    return report


def manifest_lesion_masks(manifest: str | Path, split: str) -> list[str | None]:
    """The ``lesion_mask`` file of each image of one split (absolute), in the order of
    :func:`manifest_images`; None where the manifest has no such column or cell.

    Raises:
        ManifestError: an unreadable manifest.
    """
    frame = read_manifest(manifest, required=("path", "split"))
    rows = frame[frame["split"] == split]
    if "lesion_mask" not in rows:
        return [None] * len(rows)
    folder = Path(manifest).resolve().parent
    return [
        str(folder / str(v)) if isinstance(v, str) and v.strip() else None
        for v in rows["lesion_mask"]
    ]


def manifest_images(manifest: str | Path, split: str) -> tuple[list[str], list[str], list[str]]:
    """``(paths, keys, labels)`` of one split of a manifest; keys relative to its folder.

    Raises:
        ManifestError: an unreadable manifest or an empty split.
    """
    frame = read_manifest(manifest, required=("path", "split"))
    rows = frame[frame["split"] == split]
    if rows.empty:
        raise ManifestError(f"the {split} split is empty", manifest)
    folder = Path(manifest).resolve().parent
    paths = [str(p) for p in rows["path"]]
    keys = [_key(os.path.relpath(p, folder)) for p in paths]
    labels = [str(v) for v in rows["label"]] if "label" in rows else [""] * len(paths)
    return paths, keys, labels


def image_keys(paths: Sequence[str]) -> list[str]:
    """Output names: each path relative to the common folder of all, without suffix.

    Example:
        >>> image_keys(["/d/p-1/s-1.png", "/d/p-2/s-1.png"])
        ['p-1/s-1', 'p-2/s-1']
    """
    absolute = [Path(p).resolve() for p in paths]
    common = os.path.commonpath([p.parent for p in absolute])
    return [_key(os.path.relpath(p, common)) for p in absolute]


def _key(relative: str) -> str:
    stem = str(Path(relative).with_suffix("")) if "::" not in relative else relative
    stem = stem.replace("..", "up").replace("::", "-")
    return re.sub(r"[^\w./-]", "_", Path(stem).as_posix())


def _lesion_outline(path: str, shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """The lesion mask at ``path`` as bool, resized (nearest) to ``shape`` if it differs.

    Raises:
        CorruptFileError: the mask cannot be read.
    """
    try:
        with Image.open(path) as image:
            values = np.asarray(image)
    except (OSError, ValueError) as error:
        raise CorruptFileError(f"cannot read lesion mask ({error})", path) from None
    mask: npt.NDArray[np.bool_] = np.asarray(
        (values > 0).any(axis=2) if values.ndim == 3 else values > 0, dtype=bool
    )
    if mask.shape != tuple(shape[:2]):
        mask = np.asarray(resize(mask, shape[:2], order=0, anti_aliasing=False) > 0)
    return np.asarray(mask, dtype=bool)


def _figure(
    outcome: ImageMap, method: str, label: str, lesions: npt.NDArray[np.bool_] | None
) -> npt.NDArray[np.uint8]:
    """The overlay with a colour bar, the true label, the prediction and the lesion outline."""
    caption = [
        f"true: {label}" if label else "true: not given",
        f"predicted: {outcome.pred} (p {outcome.prob_pred:.2f})",
    ]
    if outcome.target != outcome.pred:
        caption.append(f"map for: {outcome.target} (p {outcome.prob:.2f})")
    if lesions is not None:
        caption.append("white outline: true lesion" if lesions.any() else "no lesion in mask")
    name = METHOD_NAMES.get(method, method)
    return figure(
        overlay(outcome.pixels, outcome.heat, contours=lesions),
        bar_label=f"{name} for {outcome.target}, 0 to 1",
        caption=caption,
    )


def _relative(path: str, out: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), out.resolve())).as_posix()


def _chw(pixels: npt.NDArray[np.uint8]) -> torch.Tensor:
    tensor = torch.from_numpy(pixels)
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def _explain(
    model: torch.nn.Module,
    tensors: torch.Tensor,
    method: str,
    layers: Sequence[str],
    stage: int,
    indices: list[int] | None,
    foreground: npt.NDArray[np.bool_] | None,
) -> Any:
    targets = indices
    if indices is not None and any(i < 0 for i in indices):  # -1: the predicted class
        with torch.no_grad():
            predicted = model(tensors).argmax(dim=1).tolist()
        targets = [i if i >= 0 else int(p) for i, p in zip(indices, predicted, strict=True)]
    return explain_batch(
        model, tensors, method, layers=layers, stage=stage, targets=targets, foreground=foreground
    )
