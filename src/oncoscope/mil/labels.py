"""``slides.csv`` for MIL: slide labels and splits, joined with the bags they name.

``slides.csv`` has the columns ``slide`` (a slide path or file name; its stem names the bag
``<stem>.h5``), ``label`` and ``split`` (train/val/test), and optionally ``patient``. Splits
are by patient: one patient in two splits is refused. With ``bag_level="patient"`` all slides
of a patient form one bag (their tiles joined), labelled with the patient's one label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from oncoscope.dataset.split import SPLITS
from oncoscope.errors import InvalidOptionError, ManifestError, OncoscopeError
from oncoscope.features.bags import BagInfo, find_bags, read_bag_info

BagLevel = Literal["slide", "patient"]
BAG_LEVELS = ("slide", "patient")
#: The optional column grouping slides by patient.
PATIENT_COLUMN = "patient"


@dataclass(frozen=True)
class MilItem:
    """One bag as the model sees it: a slide, or every slide of a patient.

    Attributes:
        name: the slide stem (slide bags) or the patient id (patient bags).
        patient: the patient id (the slide stem when ``slides.csv`` has no patient column).
        label: the class name (empty when predicting without labels).
        split: train, val or test (empty when predicting without labels).
        bags: the bag files, one per slide, in ``slides.csv`` order.
    """

    name: str
    patient: str
    label: str
    split: str
    bags: tuple[Path, ...]


@dataclass
class MilData:
    """Bags, labels and splits of a MIL training, checked.

    Attributes:
        items: one per bag (slide or patient).
        classes: class names, sorted.
        encoder: the encoder id every bag was made with; ``encoder_spec`` its spec (parsed).
        feature_dim: the features' dimension.
        bag_level: ``slide`` or ``patient``.
        tiles: the tiling attributes of the first bag (``tile_px``, ``mpp``...).
    """

    items: list[MilItem]
    classes: list[str]
    encoder: str
    encoder_spec: dict[str, Any]
    feature_dim: int
    bag_level: str
    tiles: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[MilItem]:
        """The items of one split, in ``slides.csv`` order."""
        return [item for item in self.items if item.split == name]

    def class_counts(self, split: str = "train") -> list[int]:
        """Bags per class (in :attr:`classes` order) in ``split``."""
        labels = [item.label for item in self.split(split)]
        return [labels.count(name) for name in self.classes]


def read_slide_table(path: str | Path, *, labelled: bool = True) -> pd.DataFrame:
    """Read ``slides.csv`` and check its columns, cells, splits and patients.

    Args:
        path: the CSV file.
        labelled: require ``label`` and ``split`` (training, evaluation); without, only
            ``slide`` is required (prediction).

    Returns:
        The rows with ``stem`` (the bag name) and ``patient`` (filled with the stem where the
        file has no patient column) added, all as text.

    Raises:
        ManifestError: missing file or columns, empty cells (named by line), split values
            other than train/val/test, a slide listed twice, a patient in two splits (named).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError("labels file does not exist", path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ManifestError(f"cannot parse CSV ({type(error).__name__})", path) from None
    required = ["slide", "label", "split"] if labelled else ["slide"]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ManifestError(
            f"missing columns {missing}; slides.csv needs slide, label, split (and optionally "
            "patient)",
            path,
        )
    if frame.empty:
        raise ManifestError("labels file has no rows", path)
    for column in [*required, *([PATIENT_COLUMN] if PATIENT_COLUMN in frame.columns else [])]:
        frame[column] = frame[column].astype(str).str.strip()
        blank = frame[column] == ""
        if blank.any():
            lines = ", ".join(str(int(i) + 2) for i in frame.index[blank][:5])
            raise ManifestError(f"empty {column} on line(s) {lines}", path)
    frame["stem"] = [Path(s).stem for s in frame["slide"]]  # the bag is <slide stem>.h5
    twice = frame["stem"][frame["stem"].duplicated()].tolist()
    if twice:
        raise ManifestError(f"slide {twice[0]} is listed twice", path)
    if PATIENT_COLUMN not in frame.columns:
        frame[PATIENT_COLUMN] = frame["stem"]
    if "split" in frame.columns and labelled:
        bad = sorted(set(frame["split"]) - set(SPLITS))
        if bad:
            raise ManifestError(f"split values {bad} are not train/val/test", path)
        splits = frame.groupby(PATIENT_COLUMN)["split"].agg(lambda s: sorted(set(s)))
        for patient, names in splits.items():
            if len(names) > 1:
                raise ManifestError(
                    f"patient {patient} is in splits {', '.join(names)}; splits are by patient, "
                    "put all of a patient's slides in one split",
                    path,
                )
    return frame


def join_bags(
    frame: pd.DataFrame,
    bags_dir: str | Path,
    labels_path: str | Path,
    *,
    bag_level: str = "slide",
    labelled: bool = True,
) -> tuple[list[MilItem], list[BagInfo]]:
    """The items of ``frame`` (:func:`read_slide_table`) with their bags, and the bags' infos.

    Raises:
        InvalidOptionError: an unknown ``bag_level``.
        ManifestError: slides without a bag (named, with the count), a patient whose slides
            carry different labels (patient bags).
        OncoscopeError: an unreadable bag; bags from two encoders or of two feature sizes.
    """
    if bag_level not in BAG_LEVELS:
        raise InvalidOptionError(f"--bag-level must be slide or patient, not {bag_level!r}")
    available = find_bags(bags_dir)
    absent = [s for s in frame["stem"] if s not in available]
    if absent:
        shown = ", ".join(absent[:3]) + (", ..." if len(absent) > 3 else "")
        raise ManifestError(
            f"{len(absent)} slide(s) have no bag <slide>.h5 in {bags_dir}: {shown}", labels_path
        )
    infos = [read_bag_info(available[s]) for s in frame["stem"]]
    check_same_encoder(infos)
    label = frame["label"] if labelled else pd.Series([""] * len(frame), index=frame.index)
    split = frame["split"] if labelled else pd.Series([""] * len(frame), index=frame.index)
    if bag_level == "slide":
        items = [
            MilItem(s, p, lab, sp, (available[s],))
            for s, p, lab, sp in zip(
                frame["stem"], frame[PATIENT_COLUMN], label, split, strict=True
            )
        ]
        return items, infos
    items = []
    for patient, rows in frame.groupby(PATIENT_COLUMN, sort=False):
        labels = sorted(set(label[rows.index]))
        if len(labels) > 1:
            raise ManifestError(
                f"patient {patient} has slides labelled {', '.join(labels)}; a patient bag "
                "needs one label (or train with --bag-level slide)",
                labels_path,
            )
        bags = tuple(available[s] for s in rows["stem"])
        items.append(MilItem(str(patient), str(patient), labels[0], split[rows.index[0]], bags))
    return items, infos


def check_same_encoder(infos: Sequence[BagInfo]) -> None:
    """Refuse bags made with different encoders or of different feature sizes.

    Raises:
        OncoscopeError: naming the first bag that differs from the first bag.
    """
    first = infos[0]
    for info in infos[1:]:
        if info.encoder != first.encoder:
            raise OncoscopeError(
                f"bag made with encoder {info.encoder!r}, but {first.path.name} with "
                f"{first.encoder!r}; every bag of a training must come from one encoder",
                info.path,
            )
        if info.feature_dim != first.feature_dim:
            raise OncoscopeError(
                f"features of size {info.feature_dim}, but {first.path.name} has "
                f"{first.feature_dim}; every bag must have the same feature size",
                info.path,
            )


def load_mil_data(labels: str | Path, bags_dir: str | Path, *, bag_level: str = "slide") -> MilData:
    """Read ``slides.csv`` and the bags it names, and check them for training.

    Raises:
        ManifestError, OncoscopeError: see :func:`read_slide_table` and :func:`join_bags`; no
            train or val split; a split with one class (named).
    """
    frame = read_slide_table(labels)
    items, infos = join_bags(frame, bags_dir, labels, bag_level=bag_level)
    classes = sorted(set(item.label for item in items))
    for name in ("train", "val"):
        if not any(item.split == name for item in items):
            raise ManifestError(f"no {name} slides; MIL training needs train and val", labels)
    for name in SPLITS:
        present = sorted(set(item.label for item in items if item.split == name))
        if len(present) == 1:
            raise ManifestError(
                f"split {name} has one class only ({present[0]}); every split needs slides "
                f"of at least two of the classes {classes}",
                labels,
            )
    recorded = infos[0].attrs["encoder_spec"]  # decoded by the reader when it is JSON
    spec = recorded if isinstance(recorded, dict) else {"text": str(recorded)}
    tiles = {
        k: infos[0].attrs[k]
        for k in ("tile_px", "tile_px_level0", "stride_px", "mpp", "magnification")
    }
    return MilData(items, classes, infos[0].encoder, spec, infos[0].feature_dim, bag_level, tiles)
