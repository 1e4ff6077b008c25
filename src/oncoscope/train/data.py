"""Images of a manifest as training data: checks, datasets, samplers, transforms, DataModule.

The manifest needs ``path, label, split``; a group column (``group``, ``patient_id`` or
``slide``) is carried for grouped metrics. Every check runs before training starts, and a bad
manifest stops with one line naming it: missing image files, a class-less or one-class training
split, an empty training or validation split, labels in val/test that training never saw, a
group (patient or slide) in more than one split, image files of mixed channel counts, slices
prepared with different chains (``ct prepare --denoise/--roi``), or images of different sizes
without ``--image-size``. Every image's header is read; the pixels of
:data:`DECODE_SAMPLE` images spread over the manifest are decoded (all of them with
``check_images``), so a truncated or garbled file stops the run before it starts. One the
sample missed stops the run when it is reached, with one line naming it.

Training randomness depends only on ``(seed, epoch, index)``: the sampler's order comes from a
generator seeded by ``(seed, epoch)`` and each image's augmentation from one seeded by
``(seed, epoch, index)``. A run resumed from its last checkpoint therefore sees exactly the
batches and augmentations the uninterrupted run would have, whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from oncoscope.ct.chain import SPEC_KEY as CHAIN_SPEC_KEY
from oncoscope.ct.chain import manifest_chain
from oncoscope.dataset.images import image_exists, open_image
from oncoscope.dataset.manifest import read_manifest
from oncoscope.errors import CorruptFileError, InvalidOptionError, ManifestError
from oncoscope.models.spec import ModelSpec
from oncoscope.pathology.stain import StainAugment
from oncoscope.train.level_sampling import training_level_weights

GROUP_COLUMNS = ("group", "patient_id", "slide")
#: Manifest columns that describe how the images were made; stored in the checkpoint.
PREPROCESSING_COLUMNS = ("window", "mpp", "magnification", "row_mm", "col_mm", "size")
#: ``wsi tile --stain-normalize``: the fitted stain target as JSON (empty: not normalised).
STAIN_COLUMN = "stain"
#: Images whose pixels are decoded before training (spread evenly over the manifest); every
#: image's header is read regardless. ``check_images`` decodes them all.
DECODE_SAMPLE = 64
#: PIL's errors for a file it cannot decode.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


@dataclass
class TrainingData:
    """A checked manifest, ready to train on.

    Attributes:
        frame: the manifest rows (absolute paths).
        classes: class names, sorted; the model's output ``i`` is ``classes[i]``.
        in_chans: channels of the images (1 greyscale, 3 colour).
        image_size: side the images are resized to, in pixels.
        group_column: the column grouping images (patient or slide), if any.
        preprocessing: how the images were made (CT window, mpp, stain target, the CT slice
            chain under ``ct_chain``, ...), from the manifest.
        source: the manifest file.
    """

    frame: pd.DataFrame
    classes: list[str]
    in_chans: int
    image_size: int
    group_column: str | None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    source: Path = Path()

    def split(self, name: str) -> tuple[list[str], list[int]]:
        """Paths and class indices of one split."""
        rows = self.frame[self.frame["split"] == name]
        index = {c: i for i, c in enumerate(self.classes)}
        return list(rows["path"]), [index[label] for label in rows["label"]]

    def class_counts(self) -> list[int]:
        """Training images per class, in class order."""
        _, targets = self.split("train")
        return [int(c) for c in np.bincount(targets, minlength=len(self.classes))]


def load_training_data(
    manifest: str | Path, image_size: int | None = None, *, check_images: bool = False
) -> TrainingData:
    """Read and check a manifest for training (see module docstring for the checks).

    Args:
        manifest: the ``manifest.csv``.
        image_size: resize side in pixels; None requires all images to share one size.
        check_images: decode every image, not only a sample of :data:`DECODE_SAMPLE`.

    Raises:
        ManifestError: any failed check, naming the manifest and the problem.
        CorruptFileError: an image whose header or pixels cannot be read, naming it (and
            how many more failed, with ``check_images``).
    """
    path = Path(manifest)
    frame = read_manifest(path, required=("path", "label", "split"))
    frame["label"] = frame["label"].astype(str)
    missing = [p for p in frame["path"] if not image_exists(p)]
    if missing:
        raise ManifestError(f"{len(missing)} image file(s) are missing, e.g. {missing[0]}", path)
    counts = frame["split"].value_counts()
    for split in ("train", "val"):
        if counts.get(split, 0) == 0:
            raise ManifestError(f"the {split} split is empty; training needs train and val", path)
    classes = sorted(frame.loc[frame["split"] == "train", "label"].unique())
    if len(classes) < 2:
        raise ManifestError(
            f"the train split holds one class only ({classes[0]}); a classifier needs two", path
        )
    unseen = sorted(set(frame.loc[frame["split"] != "train", "label"]) - set(classes))
    if unseen:
        raise ManifestError(f"labels {unseen} appear in val/test but never in train", path)
    group = next((c for c in GROUP_COLUMNS if c in frame.columns), None)
    if group is not None:
        _check_groups_stay_in_one_split(frame, group, path)
    modes: dict[int, str] = {}
    sizes: dict[tuple[int, int], str] = {}
    for image_path in frame["path"]:
        try:
            with open_image(image_path) as image:
                modes.setdefault(_channels(image.mode), image_path)
                sizes.setdefault(image.size, image_path)
        except DECODE_ERRORS as error:
            raise CorruptFileError(f"cannot read image ({error})", image_path) from None
    _decode(list(frame["path"]), everything=check_images)
    if len(modes) > 1:
        (a, file_a), (b, file_b) = list(modes.items())[:2]
        raise ManifestError(
            f"images mix {a}-channel ({file_a}) and {b}-channel ({file_b}) files", path
        )
    if image_size is None:
        if len(sizes) > 1:
            (size_a, file_a), (size_b, file_b) = list(sizes.items())[:2]
            raise ManifestError(
                f"images differ in size ({size_a[0]}x{size_a[1]} in {file_a}, "
                f"{size_b[0]}x{size_b[1]} in {file_b}); pass --image-size to resize them",
                path,
            )
        width, height = next(iter(sizes))
        if width != height:
            raise ManifestError(f"images are {width}x{height}; pass --image-size", path)
        image_size = width
    preprocessing = {
        c: _plain(frame[c].iloc[0]) for c in PREPROCESSING_COLUMNS if c in frame.columns
    }
    stain = _stain_target(frame, path)
    if stain is not None:
        preprocessing["stain"] = stain
    chain = manifest_chain(frame, path)  # ``ct prepare --denoise/--roi``; mixed chains refused
    if chain is not None:
        preprocessing[CHAIN_SPEC_KEY] = chain
    if "window" in preprocessing:
        preprocessing.update(_ct_prepare_record(path, str(preprocessing["window"])))
    return TrainingData(
        frame, classes, next(iter(modes)), image_size, group, preprocessing, path.resolve()
    )


def _check_groups_stay_in_one_split(frame: pd.DataFrame, group: str, path: Path) -> None:
    """Refuse a group (patient, slide) whose images lie in more than one split."""
    named = frame.dropna(subset=[group])
    splits = named.groupby(named[group].astype(str))["split"].unique()
    spanning = splits[splits.map(len) > 1]
    if spanning.empty:
        return
    name = spanning.index[0]
    where = " and ".join(s for s in ("train", "val", "test") if s in set(spanning.iloc[0]))
    more = f" ({len(spanning) - 1} more {group}s too)" if len(spanning) > 1 else ""
    raise ManifestError(
        f"{group} {name} is in both {where}{more}; all images of one {group} belong in one "
        "split, else validation scores what training has seen",
        path,
    )


def _decode(paths: list[str], *, everything: bool) -> None:
    """Decode the pixels of every image, or of :data:`DECODE_SAMPLE` spread over ``paths``.

    Raises:
        CorruptFileError: the first image that does not decode, with the count of the others.
    """
    if everything:
        chosen = paths
    else:
        count = min(DECODE_SAMPLE, len(paths))
        spread = np.unique(np.linspace(0, len(paths) - 1, count).round().astype(int))
        chosen = [paths[i] for i in spread]
    failures: list[tuple[str, Exception]] = []
    for image_path in chosen:
        try:
            with open_image(image_path) as image:
                image.load()
        except DECODE_ERRORS as error:
            failures.append((image_path, error))
    if failures:
        first, reason = failures[0]
        more = f"; {len(failures) - 1} more image(s) do not decode" if len(failures) > 1 else ""
        raise CorruptFileError(f"cannot decode image ({reason}){more}", first)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across runs and platforms."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, epoch)``; the order depends only on ``(seed, epoch)``.

    Args:
        size: dataset length.
        seed: run seed.
        weights: per-item sampling weights for balanced sampling (with replacement), or None
            for a plain shuffle.
        rank: this process's rank; it takes every ``world_size``-th item of the epoch's order,
            which is padded with its own first items to a multiple of ``world_size`` (as
            :class:`~torch.utils.data.DistributedSampler` pads), so that every process runs
            the same number of steps: DDP waits at every step for all of them.
        world_size: number of training processes.
        current_epoch: returns the epoch when an iteration starts (from the trainer); when
            None, the epoch is the last one given to :meth:`set_epoch`. A data loader with
            workers starts drawing indices before Lightning calls ``set_epoch`` on the first
            epoch after a resume, so the trainer's own count is the safer source.
    """

    def __init__(
        self,
        size: int,
        seed: int,
        weights: list[float] | None = None,
        rank: int = 0,
        world_size: int = 1,
        current_epoch: Callable[[], int] | None = None,
    ) -> None:
        self.size, self.seed, self.weights = size, seed, weights
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.current_epoch = current_epoch

    @classmethod
    def of_trainer(
        cls, size: int, seed: int, trainer: pl.Trainer | None, weights: list[float] | None = None
    ) -> EpochSampler:
        """The sampler of a training loader under ``trainer``: this process's share of the
        items, in the order of the epoch about to run (one process when ``trainer`` is None)."""
        if trainer is None:
            return cls(size, seed, weights)
        return cls(
            size,
            seed,
            weights,
            trainer.global_rank,
            trainer.world_size,
            # the epoch about to run: right after a resume `current_epoch` still names the
            # finished epoch while the loader's workers already draw indices
            current_epoch=lambda: int(
                getattr(trainer.fit_loop.epoch_progress.current, "processed", 0)
            ),
        )

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of each epoch."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.current_epoch is not None:
            self.epoch = self.current_epoch()
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        if self.weights is None:
            order = torch.randperm(self.size, generator=generator)
        else:
            weights = torch.tensor(self.weights, dtype=torch.float64)
            order = torch.multinomial(weights, self.size, replacement=True, generator=generator)
        padding = len(self) * self.world_size - self.size
        if padding:
            order = torch.cat([order, order[:padding]])
        for index in order[self.rank :: self.world_size].tolist():
            yield index, self.epoch

    def __len__(self) -> int:
        return -(-self.size // self.world_size)


class ManifestDataset(Dataset[tuple[torch.Tensor, int]]):
    """Images and class indices; training items ``(index, epoch)`` are augmented reproducibly."""

    def __init__(
        self,
        paths: list[str],
        targets: list[int],
        in_chans: int,
        transform: v2.Transform,
        *,
        augment: v2.Transform | None = None,
        seed: int = 0,
    ) -> None:
        self.paths, self.targets, self.in_chans = paths, targets, in_chans
        self.transform, self.augment, self.seed = transform, augment, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = item if isinstance(item, tuple) else (item, None)
        try:
            with open_image(self.paths[index]) as image:
                pixels = image.convert("L" if self.in_chans == 1 else "RGB")
        except DECODE_ERRORS as error:  # one the checks before training did not decode
            raise CorruptFileError(f"cannot decode image ({error})", self.paths[index]) from None
        tensor = v2.functional.pil_to_tensor(pixels)
        if self.augment is not None and epoch is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(mix_seed(self.seed, epoch, index))
                tensor = self.augment(tensor)
        return self.transform(tensor), self.targets[index]


def augmentation(kind: str, stain_sigma: float = 0.0) -> v2.Transform | None:
    """Training augmentation on uint8 ``(C, H, W)`` tensors.

    ``ct``: small rotations, shifts and zooms and intensity jitter, no flips (left and right
    are anatomy in a transverse slice). ``histology``: flips, right-angle rotations and colour
    jitter (tissue has no orientation; stains vary). ``none``: nothing. ``stain_sigma`` > 0
    first jitters each tile's H&E stain concentrations by that strength
    (:class:`~oncoscope.pathology.stain.StainAugment`, drawing from torch's global generator),
    for colour histology tiles (:func:`check_stain_augment`).
    """
    steps: list[Callable[[Any], Any]] = []
    if stain_sigma > 0:
        steps.append(StainAugment(sigma1=stain_sigma, sigma2=stain_sigma))
    if kind == "ct":
        steps += [
            v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
            v2.ColorJitter(brightness=0.1, contrast=0.1),
        ]
    elif kind == "histology":
        steps += [
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomChoice([v2.RandomRotation((a, a)) for a in (0, 90, 180, 270)]),
            v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02),
        ]
    return v2.Compose(steps) if steps else None


def check_stain_augment(data: TrainingData, stain_sigma: float) -> None:
    """Refuse stain augmentation (``stain_sigma`` > 0) for anything but colour histology tiles.

    Raises:
        InvalidOptionError: naming the manifest: a CT slice manifest, or greyscale images.
    """
    if stain_sigma <= 0:
        return
    if infer_augmentation(data.frame) == "ct":
        what = "this is a CT slice manifest"
    elif data.in_chans != 3:
        what = "these images are greyscale"
    else:
        return
    raise InvalidOptionError(
        f"--stain-augment jitters the H&E stain of colour histology tiles; {what}", data.source
    )


def infer_augmentation(frame: pd.DataFrame) -> str:
    """``ct`` for a CT slice manifest, ``histology`` for a tile manifest, else ``none``."""
    if "slice_index" in frame.columns or "window" in frame.columns:
        return "ct"
    if "slide" in frame.columns or "mpp" in frame.columns:
        return "histology"
    return "none"


class ManifestDataModule(pl.LightningDataModule):
    """Train/val/test loaders over a :class:`TrainingData`, images fed as ``spec`` says
    (:meth:`oncoscope.models.spec.ModelSpec.eval_transform`, after augmentation).

    ``augment`` (:func:`augmentation`'s ``kind``) and ``stain_augment`` (its ``stain_sigma``)
    apply to the training split only; validation and test images are fed as they are.
    """

    def __init__(
        self,
        data: TrainingData,
        spec: ModelSpec,
        *,
        batch_size: int,
        augment: str,
        balanced_sampling: bool | str,
        num_workers: int,
        seed: int,
        stain_augment: float = 0.0,
    ) -> None:
        super().__init__()
        self.data, self.spec = data, spec
        self.batch_size, self.augment, self.balanced = batch_size, augment, balanced_sampling
        self.num_workers, self.seed, self.stain_augment = num_workers, seed, stain_augment

    def _dataset(self, split: str, training: bool) -> ManifestDataset:
        paths, targets = self.data.split(split)
        transform = self.spec.eval_transform()
        augment = augmentation(self.augment, self.stain_augment) if training else None
        return ManifestDataset(
            paths, targets, self.data.in_chans, transform, augment=augment, seed=self.seed
        )

    def _loader(self, dataset: ManifestDataset, sampler: Sampler[Any] | None) -> DataLoader[Any]:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=False,
        )

    def train_dataset(self) -> ManifestDataset:
        """The training images as training feeds them (augmented for ``(index, epoch)`` items)."""
        return self._dataset("train", training=True)

    def train_dataloader(self) -> DataLoader[Any]:
        """Shuffled (class-balanced, or liver-level balanced) training batches, split across
        processes."""
        dataset = self.train_dataset()
        weights = None
        if self.balanced == "liver-level":
            weights = training_level_weights(self.data.frame, self.data.source)
        elif self.balanced:
            counts = self.data.class_counts()
            weights = [1.0 / counts[t] for t in dataset.targets]
        sampler = EpochSampler.of_trainer(len(dataset), self.seed, self.trainer, weights)
        return self._loader(dataset, sampler)

    def val_dataloader(self) -> DataLoader[Any]:
        """Validation batches in manifest order."""
        return self._loader(self._dataset("val", training=False), None)

    def test_dataloader(self) -> DataLoader[Any]:
        """Test batches in manifest order."""
        return self._loader(self._dataset("test", training=False), None)


def _channels(mode: str) -> int:
    return 1 if mode in ("L", "I", "I;16", "F", "1", "LA") else 3


def _stain_target(frame: pd.DataFrame, manifest: Path) -> dict[str, Any] | None:
    """The stain target every tile was normalised to (``wsi tile --stain-normalize``), or None.

    Raises:
        ManifestError: tiles normalised to different targets, or some normalised and some not.
    """
    if STAIN_COLUMN not in frame.columns:
        return None
    values = {"" if pd.isna(v) else str(v).strip() for v in frame[STAIN_COLUMN]}
    if values == {""}:
        return None
    if len(values) > 1:
        raise ManifestError(
            "tiles were stain-normalised to different targets (or some not at all); "
            "tile every slide with the same --stain-normalize reference",
            manifest,
        )
    try:
        target: dict[str, Any] = json.loads(values.pop())
    except json.JSONDecodeError:
        raise ManifestError("the stain column is not the JSON wsi tile writes", manifest) from None
    return target


def _ct_prepare_record(manifest: Path, window: str) -> dict[str, Any]:
    """``window_hu`` (the HU bounds of each window) and ``ct_size_px`` from the
    ``prepare.json`` that ``ct prepare`` wrote beside ``manifest``, when it is there and names
    the manifest's ``window``; else ``{}`` (the spec then reads the window names).
    """
    try:
        options = json.loads((manifest.parent / "prepare.json").read_text())["options"]
        names = [str(w["name"]) for w in options["windows"]]
        windows = [
            {"name": name, "low_hu": float(w["low_hu"]), "high_hu": float(w["high_hu"])}
            for name, w in zip(names, options["windows"], strict=True)
        ]
        size_px = options.get("size_px")
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if ",".join(names) != window:
        return {}
    return {"window_hu": windows, "ct_size_px": None if size_px is None else int(size_px)}


def _plain(value: Any) -> Any:
    """A numpy scalar as a plain Python value, for YAML and checkpoints."""
    return value.item() if hasattr(value, "item") else value
