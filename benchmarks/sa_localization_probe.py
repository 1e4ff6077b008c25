"""Where does a trained SA-EfficientNet look? Classification and pointing game (run by hand).

The small SA-EfficientNet-Lite0 on the demo cohort's split (``benchmarks/demo_ct_localization.py``
writes the same cohort): training's warm start (``oncoscope.train.warm_start``, 8 epochs), then
a plain training loop without augmentation (Adam 1e-3, cosine, batch 16, balanced sampling,
``--epochs``), on one of two heads:

- ``whole``: the model as registered (the EfficientNet's stages to stride 32, its pooled head);
- ``cam``: the front end and Lite0's ``blocks.3-4`` only (stride 16), under a class-activation
  head from zero (the layout of the demo's ``cam_efficientnet_lite0``), its class map pooled
  over positions by ``--pool`` (``avg``, ``lse`` or ``max``; ``models/pooling.py``).
  ``--output-stride 8`` builds the backbone dilated after stride 8 (timm's ``output_stride``),
  so the class map is read on the front end's own stride-8 grid.

``--chain em`` trains and tests on the cohort as ``ct prepare --denoise median:3 --roi em``
writes it (seed 001's chain: outside the EM liver ROI every slice is black, so the model never
sees the rest of the body). ``--maps-in-liver`` scores every map only inside seed 001's EM liver
ROI of its slice, computed from the source volume's HU (as ``locate`` keeps candidates inside
the liver; no mask is read): pointing takes the map's maximum inside the ROI, PxAP counts the
ROI's pixels.

``--anomaly`` also scores a map made from the front end's features with image labels only: a
Gaussian (Ledoit-Wolf) fitted on its stride-8 vectors inside the EM liver ROI of the training
split's healthy slices, and each test position's Mahalanobis distance to it.

``--match-liver`` trains on the tumour slices and only those healthy slices whose liver
fraction is at least the 10th percentile of the training tumour slices' (the liver levels where
lesions lie: the liver-fraction shortcut's AUROC on the kept slices is about 0.5);
``test_auroc_liver_levels`` is the test AUROC over the test slices at those levels.

``--level-balance Q`` keeps every healthy training slice but draws them level-balanced, as
``train --sampling liver-level`` does (``oncoscope.train.level_sampling``, whose ``Q`` is
0.2): a healthy draw comes, with probability ``1 - Q``, from one of five liver-fraction bins
cut at the training tumour slices' quintiles above that floor, each bin as often as the
tumour slices lie in it (so at the liver levels where lesions lie, level says next to nothing
about the label), and with probability ``Q`` from the healthy slices below the floor (levels
without lesions, still seen).
``--augment`` applies training's CT augmentation (``oncoscope.train.data.augmentation("ct")``:
rotation up to 10 degrees, shifts up to 5 %, zoom 0.9-1.1, brightness and contrast 0.1) to each
training image, filled with air. ``--image-px N`` feeds the slices at ``N`` px (default 224;
the cohort's slices are 256 px, 1.48 mm pixels).

``--negative-positions W`` adds to the ``cam`` head's loss ``W`` times the mean, over every
position of every healthy slice in the batch, of ``softplus(tumour score - healthy score)`` of
its class map: a healthy slice has no tumour position (the negative bags of multiple-instance
learning; image labels only). ``--last-block B`` ends the ``cam`` head's backbone at
``blocks[B]`` (below the fed stage: the class map on the front end's own stride-8 output);
``--front-stages N`` reads the class map on the front end's stage ``N`` instead (stride
``2**N``, no backbone). ``--save-maps DIR`` writes the test tumour slices' class and SmoothGrad
maps with their lesion masks (``.npz``) and the trained model with the test slices (``.pt``).

``--side-stages S [S ...]`` adds deep supervision to the ``cam`` head: a class map from zero
on each front-end stage ``S`` (stride ``2**S``), its pooled map under the same cross-entropy,
added to the loss; printed: each side map's pointing and PxAP (``side{S}_*``) and those of
the main 7-cell boxed class map times the side maps, each scaled to 0..1 (``product{S}_*``).
Every ``cam`` run also prints ``d8_box7_*``: the class map averaged over the image's eight
flips and quarter turns (each turned back) before the 7-cell box filter.

Every ``cam`` run also prints the guided product's pointing and PxAP with 95 % patient-bootstrap
intervals (``guided_*_ci``: value, low, high) and its hits by the slice's largest lesion
diameter and lesion section; ``--rescore DIR`` prints the same for every ``--save-maps`` file
in ``DIR`` (the cohort of ``--patients`` under ``--work``) and trains nothing.

``--patients N`` makes the cohort of ``N`` phantoms (a quarter lesion-free) in place of the
demo's 16, for a test split with more patients.

``--precision bf16`` trains under CPU bf16 autocast (the warm start and every map at fp32).

``--freeze-front`` keeps the warm-started front end fixed. ``--model efficientnet_lite0`` runs
the plain EfficientNet-Lite0 through the same loop (``whole`` head, no warm start). Printed per
run: val and test AUROC, and on the test tumour slices the pointing game of SmoothGrad maps
(``explain --method smoothgrad``'s) and, for ``cam``, the class map's pointing game and PxAP,
raw and after a 7- and a 9-cell box filter (``cam_box7_*``, ``cam_box9_*``: local attention
spreads a lesion's evidence over a plateau the width of its window, whose centre the box
filter finds), and of SmoothGrad times the 7-cell boxed class map above its median
(``guided_box7_*``, the product Guided Grad-CAM takes), against the lesion masks; the test
AUROC again with every tumour slice's lesion pixels replaced by pixels drawn from the same
slice's liver (``test_auroc_inpainted``: does the decision rest on the lesion? a diagnostic
that reads the masks, not a localisation method); and, as the anatomy baseline, the AUROC of
each slice's liver fraction alone (a column of the manifest: tumour slices sit mid-liver,
where the liver is largest).

    .venv/bin/python benchmarks/sa_localization_probe.py --head whole --head cam --seeds 0
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from demo_ct_localization import cohort  # beside this script
from phantom_localization import machine_line
from PIL import Image
from sa_front_end_stem import _Slices, normalised, slices
from scipy.ndimage import uniform_filter
from sklearn.metrics import roc_auc_score
from torch import nn

from oncoscope.ct.chain import SliceChain, apply_chain
from oncoscope.dataset.manifest import read_manifest
from oncoscope.evaluate.bootstrap import bootstrap
from oncoscope.explain.localization_metrics import N_BINS, pixel_counts, pointing_hit, pxap
from oncoscope.explain.smoothgrad import smoothgrad_maps
from oncoscope.io.volumes import read_volume
from oncoscope.models import create_model
from oncoscope.models.pooling import pool_positions
from oncoscope.train.data import augmentation
from oncoscope.train.level_sampling import liver_level_weights
from oncoscope.train.warm_start import warm_start_front

BATCH = 16


def split_tensors(
    manifest: Path, split: str, mean: float, std: float, side: int
) -> tuple[Any, Any, Any]:
    """``(images (N, 1, side, side) normalised, labels (N,), the split's manifest rows)``."""
    frame = read_manifest(manifest)
    frame = frame[frame["split"] == split].reset_index(drop=True)
    labels = torch.tensor((frame["label"] == "tumour").to_numpy(), dtype=torch.long)
    return slices(manifest, split, mean, std, side), labels, frame


class _StageCAM(nn.Module):
    """The SA model's front end and backbone ``blocks[feed_stage : last + 1]`` under a class
    map from zero, pooled over positions by ``pool``."""

    def __init__(
        self,
        sa: Any,
        last_block: int = 4,
        classes: int = 2,
        pool: str = "avg",
        front_stages: int | None = None,
        side_stages: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.pool = pool
        self.front = sa.front
        self.front_stages = front_stages
        kept = [] if front_stages is not None else list(sa.backbone.blocks)
        self.blocks = nn.Sequential(*kept[sa.feed_stage : last_block + 1])
        if front_stages is not None:  # the class map on an earlier stage of the front end
            channels = int(self.front.stages[front_stages - 1].norm.num_features)
        elif len(self.blocks):
            channels = int(self.blocks[-1][-1].conv_pwl.out_channels)
        else:  # the class map on the front end's own output
            channels = int(sa.front.project[0].out_channels)
        self.classifier = nn.Linear(channels, classes)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)
        # deep supervision: a class map from zero on each of the front end's ``side_stages``
        self.side_stages = side_stages
        self.side = nn.ModuleList(
            nn.Linear(int(self.front.stages[s - 1].norm.num_features), classes) for s in side_stages
        )
        for layer in self.side:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def maps(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The class map and the side heads' class maps (stage ``s`` at stride ``2**s``,
        shallow first), from one pass through the front end."""
        sides, features = [], self.front.stem(x)
        for index, stage in enumerate(self.front.stages, start=1):
            features = stage(features)
            if index in self.side_stages:
                head = self.side[self.side_stages.index(index)]
                sides.append(head(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
            if index == self.front_stages:
                break
        if self.front_stages is None:
            features = self.blocks(self.front.project(features))
        main = self.classifier(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return main, sides

    def class_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_positions(self.class_map(x).flatten(2), self.pool)


def probabilities(model: nn.Module, images: torch.Tensor) -> np.ndarray[Any, Any]:
    model.eval()
    with torch.no_grad():
        return torch.cat(
            [model(images[i : i + 32]).softmax(1)[:, 1] for i in range(0, len(images), 32)]
        ).numpy()


def em_livers(
    rows: Any, shape: tuple[int, ...], median_size_px: int | None
) -> list[np.ndarray[Any, Any]]:
    """Seed 001's EM liver ROI of each row's slice, from its volume's HU (after the median
    filter when the chain has one), on the ``shape`` grid of the lesion masks."""
    chain = SliceChain(median_size_px=median_size_px, roi="em")
    livers, volume, path = [], None, None
    for row in rows.itertuples():
        if row.source != path:
            volume, path = read_volume(Path(row.source)), row.source
        assert volume is not None
        pixel_mm = (volume.spacing_mm[1], volume.spacing_mm[2])
        roi = apply_chain(volume.array[row.slice_index], chain, pixel_mm=pixel_mm, fill_hu=-1e3).roi
        assert roi is not None
        grid = Image.fromarray(roi.astype(np.uint8) * 255).resize(shape[::-1], Image.NEAREST)
        livers.append(np.asarray(grid) > 0)
    return livers


def front_anomaly(
    model: Any,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    train_rows: Any,
    x_maps: torch.Tensor,
    median_size_px: int | None,
) -> np.ndarray[Any, Any]:
    """Maps of how unlike healthy liver each position of the front end's output is.

    The front end's stride-8 feature vectors at the positions inside the EM liver ROI of the
    training split's healthy slices (image labels only) give a Gaussian (Ledoit-Wolf
    covariance); each map is the Mahalanobis distance of every position's vector to it.
    """
    from sklearn.covariance import LedoitWolf

    front = model.front
    front.eval()
    with torch.no_grad():
        healthy = torch.cat(
            [
                front(x_train[y_train == 0][i : i + 32])
                for i in range(0, int((y_train == 0).sum()), 32)
            ]
        )
        grid = tuple(healthy.shape[-2:])
        rows = train_rows[(train_rows["label"] != "tumour").to_numpy()]
        livers = np.stack(em_livers(rows, grid, median_size_px))
        vectors = healthy.permute(0, 2, 3, 1).numpy()[livers]
        fit = LedoitWolf().fit(vectors)
        maps = torch.cat([front(x_maps[i : i + 32]) for i in range(0, len(x_maps), 32)])
    flat = maps.permute(0, 2, 3, 1).numpy()
    centred = flat - fit.location_
    distance = np.einsum("nhwc,cd,nhwd->nhw", centred, fit.precision_, centred)
    return np.sqrt(np.maximum(distance, 0.0))


def _onto(heat: np.ndarray[Any, Any], shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    return np.asarray(Image.fromarray(heat.astype(np.float32)).resize(shape[::-1]))


def pointing(
    maps: np.ndarray[Any, Any],
    masks: list[np.ndarray[Any, Any]],
    livers: list[np.ndarray[Any, Any]] | None = None,
) -> float:
    """Share of slices whose map maximum (resized onto the mask; inside ``livers`` when given,
    over the whole slice where a liver is empty) falls in a lesion."""
    hits = []
    for k, (heat, truth) in enumerate(zip(maps, masks, strict=True)):
        resized = _onto(heat, truth.shape)
        if livers is not None and livers[k].any():
            resized = np.where(livers[k], resized, -np.inf)
        hits.append(pointing_hit(resized, truth))
    return float(np.mean(hits))


def inpainted(
    manifest: Path, rows: Any, mean: float, std: float, seed: int, side: int
) -> torch.Tensor:
    """The rows' slices as :func:`slices` gives them, lesion pixels replaced by liver pixels."""
    rng = np.random.default_rng(seed)
    images = []
    for row in rows.itertuples():
        with Image.open(manifest.parent / row.path) as im:
            grey = np.asarray(im.convert("L"))
        with Image.open(manifest.parent / row.lesion_mask) as im:
            lesion = np.asarray(im) > 0
        with Image.open(manifest.parent / row.liver_mask) as im:
            liver = np.asarray(im) > 0
        if lesion.any():
            grey = grey.copy()
            grey[lesion] = rng.choice(grey[liver & ~lesion], size=int(lesion.sum()))
        images.append(normalised(grey, mean, std, side))
    return torch.from_numpy(np.stack(images))[:, None]


def guided_maps(
    gradients: np.ndarray[Any, Any],
    class_maps: np.ndarray[Any, Any],
    masks: list[np.ndarray[Any, Any]],
    box: int = 7,
) -> np.ndarray[Any, Any]:
    """SmoothGrad maps times the class maps (``box``-cell box filter, the part above their
    median), both resized onto the masks' grid: the product Guided Grad-CAM takes."""
    guided = []
    for gradient, box_map, truth in zip(gradients, _boxed(class_maps, box), masks, strict=True):
        boxed = _onto(box_map, truth.shape)
        guided.append(_onto(gradient, truth.shape) * np.clip(boxed - np.median(boxed), 0.0, None))
    return np.stack(guided)


def _boxed(maps: np.ndarray[Any, Any], side: int) -> np.ndarray[Any, Any]:
    """Each map after a ``side``-cell box filter (zero beyond the map's edge)."""
    return np.stack([uniform_filter(m, side, mode="constant") for m in maps])


def _scaled(heat: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    span = float(heat.max() - heat.min())
    return (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)


def side_readouts(
    model: Any, x: torch.Tensor, class_maps: np.ndarray[Any, Any], masks: list[Any]
) -> dict[str, float]:
    """Pointing and PxAP of each side head's class map, and of the product of the main class
    map (7-cell box filter) with the side maps, each scaled to 0..1 on the masks' grid (the
    coarse map says where, the finer ones sharpen it)."""
    model.eval()
    with torch.no_grad():
        sides = [m[:, 1].numpy() for m in model.maps(x)[1]]
    record: dict[str, float] = {}
    product = np.stack(
        [_scaled(_onto(c, m.shape)) for c, m in zip(_boxed(class_maps, 7), masks, strict=True)]
    )
    for stage, side in zip(model.side_stages, sides, strict=True):
        record[f"side{stage}_pointing"] = round(pointing(side, masks), 3)
        record[f"side{stage}_pxap"] = round(pixel_ap(side, masks), 3)
        product = product * np.stack(
            [_scaled(_onto(s, m.shape)) for s, m in zip(side, masks, strict=True)]
        )
        record[f"product{stage}_pointing"] = round(pointing(product, masks), 3)
        record[f"product{stage}_pxap"] = round(pixel_ap(product, masks), 3)
    return record


def symmetric_readouts(model: Any, x: torch.Tensor, masks: list[Any]) -> dict[str, float]:
    """Pointing and PxAP of the class map averaged over the image's 8 flips and quarter turns
    (each map turned back), after a 7-cell box filter: the relative-position term shifts the
    plateau to one side, the average is centred."""
    model.eval()
    total = None
    with torch.no_grad():
        for turns in range(4):
            for flip in (False, True):
                seen = torch.rot90(x, turns, (2, 3))
                seen = torch.flip(seen, [3]) if flip else seen
                maps = torch.cat(
                    [model.class_map(seen[i : i + 16])[:, 1] for i in range(0, len(seen), 16)]
                )
                maps = torch.flip(maps, [2]) if flip else maps
                maps = torch.rot90(maps, -turns, (1, 2))
                total = maps if total is None else total + maps
    assert total is not None
    boxed = _boxed(total.numpy() / 8, 7)
    return {
        "d8_box7_pointing": round(pointing(boxed, masks), 3),
        "d8_box7_pxap": round(pixel_ap(boxed, masks), 3),
    }


def pixel_ap(
    maps: np.ndarray[Any, Any],
    masks: list[np.ndarray[Any, Any]],
    livers: list[np.ndarray[Any, Any]] | None = None,
) -> float:
    """PxAP of the maps (resized onto the masks, each scaled to 0..1) over the slices' pixels,
    or over those inside ``livers`` (lesion pixels outside an ROI count as missed)."""
    counts = np.zeros((2, N_BINS), dtype=np.int64)
    for k, (heat, truth) in enumerate(zip(maps, masks, strict=True)):
        scaled = _scaled(_onto(heat, truth.shape))
        if livers is not None and livers[k].any():
            scaled = np.where(livers[k], scaled, 0.0)
        counts = counts + pixel_counts(scaled, truth)
    return pxap(counts)


def with_intervals(
    maps: np.ndarray[Any, Any], masks: list[Any], rows: Any, name: str
) -> dict[str, Any]:
    """Pointing and PxAP of ``maps`` on the test tumour slices (``rows``, their manifest rows)
    with 95 % patient-bootstrap intervals (1,000 resamples; the intervals ``evaluate
    --localization`` prints), and the pointing hits by the slice's largest lesion diameter
    (``<10``, ``10-20``, ``>20`` mm, ``max_lesion_mm``) and lesion section (``<8``, ``8-15``,
    ``>=15`` mm, ``max_section_mm``) as ``hits/slices``."""
    pairs = [(_onto(heat, truth.shape), truth) for heat, truth in zip(maps, masks, strict=True)]
    hits = np.array([pointing_hit(heat, truth) for heat, truth in pairs])
    counts = np.stack([pixel_counts(_scaled(heat), truth) for heat, truth in pairs])

    def figures(index: np.ndarray[Any, Any]) -> dict[tuple[str, ...], float | None]:
        return {("pointing",): float(hits[index].mean()), ("pxap",): pxap(counts[index].sum(0))}

    groups = rows["patient_id"].astype(str).to_numpy()
    estimates = bootstrap(figures, groups, n_resamples=1000, seed=0)
    record: dict[str, Any] = {"patients_with_lesions": len(set(groups))}
    for (figure,), estimate in estimates.items():
        record[f"{name}_{figure}_ci"] = [round(float(v or 0), 3) for v in estimate.values()]
    for column, edges, labels in (
        ("max_lesion_mm", (10, 20), ("<10", "10-20", ">20")),
        ("max_section_mm", (8, 15), ("<8", "8-15", ">=15")),
    ):
        size = np.digitize(rows[column].to_numpy(float), edges)
        for index, label in enumerate(labels):
            record[f"{name}_hits_{column[4:-3]} {label}"] = (
                f"{hits[size == index].sum()}/{(size == index).sum()}"
            )
    return record


def rescore(folder: Path, manifest: Path) -> None:
    """:func:`with_intervals` of the guided product of every ``--save-maps`` file in ``folder``."""
    frame = read_manifest(manifest)
    rows = frame[(frame["split"] == "test") & (frame["label"] == "tumour")]
    for saved in sorted(folder.glob("*.npz")):
        arrays = np.load(saved)
        masks = list(arrays["masks"])
        guided = guided_maps(arrays["smoothgrad"], arrays["cam"], masks)
        print(json.dumps({"maps": saved.name, **with_intervals(guided, masks, rows, "guided")}))


def augmented(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Each normalised image through training's CT augmentation, in 0..1 grey (air fills)."""
    transform = augmentation("ct")
    grey = (x * std + mean).clamp(0, 1)
    return (torch.stack([transform(image) for image in grey]) - mean) / std


def step_loss(args: argparse.Namespace, model: Any, x: torch.Tensor, y: torch.Tensor) -> Any:
    """One batch's training loss: cross-entropy of the pooled class map (``whole``: of the
    logits), plus for the ``cam`` head each side head's (``--side-stages``, deep supervision)
    and ``--negative-positions``' term."""
    if not hasattr(model, "maps"):
        return F.cross_entropy(model(x), y)
    class_map, sides = model.maps(x)
    loss = F.cross_entropy(pool_positions(class_map.flatten(2), args.pool), y)
    for side in sides:
        loss = loss + F.cross_entropy(pool_positions(side.flatten(2), args.pool), y)
    healthy = y == 0
    if args.negative_positions > 0 and healthy.any():
        # image labels only: a healthy slice has no tumour position, so every position of
        # its class map is pushed to "healthy"
        margin = class_map[healthy, 1] - class_map[healthy, 0]
        loss = loss + args.negative_positions * F.softplus(margin).mean()
    return loss


def run(args: argparse.Namespace, manifest: Path, head: str, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    extra = {"output_stride": args.output_stride} if args.output_stride != 32 else {}
    model: Any = create_model(args.model, num_classes=2, in_chans=1, pretrained=True, **extra)
    mean = float(np.mean(model.pretrained_cfg["mean"]))  # as training's spec feeds one channel
    std = float(np.mean(model.pretrained_cfg["std"]))
    x_train, y_train, train_rows = split_tensors(manifest, "train", mean, std, args.image_px)
    floor = float(train_rows.loc[y_train.numpy() == 1, "liver_fraction"].quantile(0.1))
    if args.match_liver:  # healthy slices only from the liver levels where tumour slices lie
        keep = (y_train.numpy() == 1) | (train_rows["liver_fraction"].to_numpy() >= floor)
        x_train, y_train = x_train[torch.from_numpy(keep)], y_train[torch.from_numpy(keep)]
        train_rows = train_rows[keep].reset_index(drop=True)
    x_val, y_val, _ = split_tensors(manifest, "val", mean, std, args.image_px)
    x_test, y_test, test_rows = split_tensors(manifest, "test", mean, std, args.image_px)
    record: dict[str, Any] = {"model": args.model, "head": head, "seed": seed, "chain": args.chain}
    record["match_liver"] = args.match_liver
    record["negative_positions"] = args.negative_positions
    record["precision"] = args.precision
    record.update(level_balance=args.level_balance, augment=args.augment, image_px=args.image_px)
    if head == "cam":
        record.update(pool=args.pool, output_stride=args.output_stride)
    if getattr(model, "replaced_stages", None) is not None:
        warm = warm_start_front(model, _Slices(x_train), epochs=8, batch_size=BATCH, seed=seed)
        record["warm_start_relative_error"] = round(warm.relative_error, 3)
    if head == "cam":
        model = _StageCAM(
            model,
            last_block=args.last_block,
            pool=args.pool,
            front_stages=args.front_stages,
            side_stages=tuple(args.side_stages),
        )
    if args.freeze_front:
        for parameter in model.front.parameters():
            parameter.requires_grad_(False)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trained, lr=1e-3)
    steps = max(len(x_train) // BATCH, 1)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, args.epochs * steps)
    weight = 1.0 / torch.bincount(y_train).float()[y_train]
    if args.level_balance is not None:
        fraction = train_rows["liver_fraction"].to_numpy()
        weight = torch.from_numpy(
            liver_level_weights(y_train.numpy() == 1, fraction, args.level_balance)
        )
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        if args.freeze_front:
            model.front.eval()
        for _ in range(steps):
            index = torch.multinomial(weight, BATCH, replacement=True, generator=generator)
            x = augmented(x_train[index], mean, std) if args.augment else x_train[index]
            with torch.autocast("cpu", torch.bfloat16, enabled=args.precision == "bf16"):
                loss = step_loss(args, model, x, y_train[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    record["train_seconds"] = round(time.perf_counter() - started, 1)
    record["val_auroc"] = round(roc_auc_score(y_val, probabilities(model, x_val)), 3)
    test_probabilities = probabilities(model, x_test)
    record["test_auroc"] = round(roc_auc_score(y_test, test_probabilities), 3)
    level = test_rows["liver_fraction"].to_numpy() >= floor
    record["test_auroc_liver_levels"] = round(
        roc_auc_score(y_test[level], test_probabilities[level]), 3
    )
    cleaned = inpainted(manifest, test_rows, mean, std, seed, args.image_px)
    record["test_auroc_inpainted"] = round(roc_auc_score(y_test, probabilities(model, cleaned)), 3)
    tumour = test_rows.index[test_rows["label"] == "tumour"].to_numpy()
    masks = []
    for path in test_rows.loc[tumour, "lesion_mask"]:
        with Image.open(manifest.parent / path) as im:
            masks.append(np.asarray(im) > 0)
    livers = None
    if args.maps_in_liver:
        median = 3 if args.chain == "em" else None
        livers = em_livers(test_rows.loc[tumour], masks[0].shape, median)
        record["em_liver_empty"] = sum(not liver.any() for liver in livers)
        record["lesion_share_in_em_liver"] = round(
            sum(int((m & v).sum()) for m, v in zip(masks, livers, strict=True))
            / max(sum(int(m.sum()) for m in masks), 1),
            3,
        )
    if args.anomaly:
        median = 3 if args.chain == "em" else None
        anomaly = front_anomaly(model, x_train, y_train, train_rows, x_test[tumour], median)
        test_livers = livers or em_livers(test_rows.loc[tumour], masks[0].shape, median)
        record["anomaly_pointing"] = round(pointing(anomaly, masks), 3)
        record["anomaly_pointing_in_liver"] = round(pointing(anomaly, masks, test_livers), 3)
        record["anomaly_pxap_in_liver"] = round(pixel_ap(anomaly, masks, test_livers), 3)
    maps = smoothgrad_maps(model, x_test[tumour], [1] * len(tumour))
    record["tumour_slices"] = len(tumour)
    record["smoothgrad_pointing"] = round(pointing(maps, masks), 3)
    record["smoothgrad_pxap"] = round(pixel_ap(maps, masks), 3)
    if livers is not None:
        record["smoothgrad_pointing_in_liver"] = round(pointing(maps, masks, livers), 3)
        record["smoothgrad_pxap_in_liver"] = round(pixel_ap(maps, masks, livers), 3)
    if head == "cam":
        model.eval()
        with torch.no_grad():
            class_maps = model.class_map(x_test[tumour])[:, 1].numpy()
        record["cam_pointing"] = round(pointing(class_maps, masks), 3)
        record["cam_pxap"] = round(pixel_ap(class_maps, masks), 3)
        if args.save_maps is not None:
            name = f"{head}-{args.pool}-{args.output_stride}-{args.last_block}"
            name += f"-f{args.front_stages}-n{args.negative_positions:g}-seed{seed}"
            name += f"-s{''.join(map(str, args.side_stages))}-{args.precision}"
            name += f"-m{int(args.match_liver)}-b{args.level_balance}-a{int(args.augment)}"
            name += f"-px{args.image_px}"
            np.savez(args.save_maps / f"{name}.npz", cam=class_maps, smoothgrad=maps, masks=masks)
            torch.save({"model": model, "x": x_test[tumour]}, args.save_maps / f"{name}.pt")
        for side in (7, 9):  # a box the width of the last attention window and a bit more
            boxed = _boxed(class_maps, side)
            record[f"cam_box{side}_pointing"] = round(pointing(boxed, masks), 3)
            record[f"cam_box{side}_pxap"] = round(pixel_ap(boxed, masks), 3)
        if args.side_stages:
            record.update(side_readouts(model, x_test[tumour], class_maps, masks))
        record.update(symmetric_readouts(model, x_test[tumour], masks))
        guided = guided_maps(maps, class_maps, masks)
        record["guided_box7_pointing"] = round(pointing(guided, masks), 3)
        record["guided_box7_pxap"] = round(pixel_ap(guided, masks), 3)
        record.update(with_intervals(guided, masks, test_rows.loc[tumour], "guided"))
        if livers is not None:
            record["cam_pointing_in_liver"] = round(pointing(class_maps, masks, livers), 3)
            record["cam_pxap_in_liver"] = round(pixel_ap(class_maps, masks, livers), 3)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sa_efficientnet_lite0")
    parser.add_argument("--head", action="append", choices=["whole", "cam"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--pool", choices=["avg", "lse", "max"], default="avg")
    parser.add_argument("--output-stride", type=int, choices=[8, 16, 32], default=32)
    parser.add_argument("--freeze-front", action="store_true")
    parser.add_argument("--chain", choices=["none", "em"], default="none")
    parser.add_argument("--maps-in-liver", action="store_true")
    parser.add_argument("--anomaly", action="store_true")
    parser.add_argument("--match-liver", action="store_true")
    parser.add_argument("--level-balance", type=float, default=None)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--image-px", type=int, default=224)
    parser.add_argument("--negative-positions", type=float, default=0.0)
    parser.add_argument("--save-maps", type=Path, default=None)
    parser.add_argument("--last-block", type=int, default=4)
    parser.add_argument("--front-stages", type=int, default=None)
    parser.add_argument("--side-stages", type=int, nargs="*", default=[])
    parser.add_argument("--patients", type=int, default=16)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--rescore", type=Path, default=None)
    args = parser.parse_args()
    cam_only = args.negative_positions > 0 or args.front_stages is not None or args.last_block != 4
    cam_only = cam_only or bool(args.side_stages)
    if args.level_balance is not None and (args.match_liver or not 0 <= args.level_balance < 1):
        parser.error("--level-balance Q needs 0 <= Q < 1 and no --match-liver")
    if cam_only and (args.head or ["whole"]) != ["cam"]:
        parser.error(
            "--negative-positions, --front-stages, --last-block and --side-stages "
            "need --head cam only"
        )
    warnings.filterwarnings("ignore")
    work = args.work or Path(tempfile.mkdtemp(prefix="sa-probe-"))
    if args.save_maps is not None:
        args.save_maps.mkdir(parents=True, exist_ok=True)
    print(machine_line(), flush=True)
    chain = SliceChain(median_size_px=3, roi="em") if args.chain == "em" else None
    name = "cohort-0" if args.patients == 16 else f"cohort-0-p{args.patients}"
    manifest = cohort(work / name, 0, chain, args.patients)
    if args.rescore is not None:
        rescore(args.rescore, manifest)
        return
    frame = read_manifest(manifest)
    for split in ("train", "val", "test"):
        rows = frame[frame["split"] == split]
        auroc = roc_auc_score(rows["label"] == "tumour", rows["liver_fraction"])
        print(json.dumps({"anchor": "liver_fraction", "split": split, "auroc": round(auroc, 3)}))
    for seed in args.seeds:
        for head in args.head or ["whole"]:
            print(json.dumps(run(args, manifest, head, seed)), flush=True)


if __name__ == "__main__":
    main()
