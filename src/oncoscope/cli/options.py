"""The command-line options several commands share, each declared once.

A command writes ``batch_size: BatchSize = 16``: the ``Annotated`` alias carries the option's
checks, help and help panel, the default stays in the command's signature (typer reads it from
there). Where the help must say what a command does with the option (tiles or slices, classify
or encode), a small factory returns the ``typer.Option`` for the command to annotate with, e.g.
``Annotated[int, batch_size_option("Tiles")]``.

Help panels group a command's options in ``--help`` (:data:`INPUT`, :data:`RESOLUTION`, ...);
options without one are listed under "Options".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

INPUT = "Input"
RESOLUTION = "Resolution"
TILES = "Tiles"
MODEL = "Model & precision"
TRAINING = "Training"
DISTRIBUTED = "Distributed"
OUTPUTS = "Outputs"


# --- Checks of numbers, refused at parse time (exit code 2, naming the option) ---


def positive_number(value: float | None) -> float | None:
    """Option callback: a finite number above 0 (None passes: an optional option not given).

    Used on every option that is a size, a resolution or a fraction of a tile, so that NaN,
    infinities, 0 and negatives are refused at parse time as a usage error (exit code 2)
    naming the option.

    Raises:
        typer.BadParameter: NaN, an infinity, 0 or a negative number.
    """
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a finite number above 0, got {value:g}")
    return value


def finite_number(value: float | None) -> float | None:
    """Option callback: a finite number (None passes); NaN and infinities are refused at parse
    time as a usage error (exit code 2) naming the option. Ranges are the option's ``min``/``max``.

    Raises:
        typer.BadParameter: NaN or an infinity.
    """
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value:g}")
    return value


def positive_option(help: str, *, max: float | None = None, panel: str | None = None) -> Any:
    """A float option that must be a finite number above 0 (at most ``max``): a size, a
    resolution, a rate."""
    return typer.Option(max=max, help=help, callback=positive_number, rich_help_panel=panel)


def finite_option(
    help: str, *, min: float | None = None, max: float | None = None, panel: str | None = None
) -> Any:
    """A float option that must be a finite number (in [``min``, ``max``]), e.g. HU or mm."""
    return typer.Option(min=min, max=max, help=help, callback=finite_number, rich_help_panel=panel)


def fraction_option(help: str, *, max: float = 1.0, panel: str | None = None) -> Any:
    """A float option in [0, ``max``]: a share of a tile, a probability."""
    return finite_option(help, min=0.0, max=max, panel=panel)


# --- Inputs ---


def checkpoint_argument(what: str = "A checkpoint from `oncoscope train`") -> Any:
    """The CHECKPOINT argument: ``what`` it must be, and where a run keeps it."""
    return typer.Argument(help=f"{what} (RUN/checkpoints/best.ckpt).")


#: CHECKPOINT: a checkpoint of ``oncoscope train``.
Checkpoint = Annotated[Path, checkpoint_argument()]
#: SLIDE...: slide files or folders of them.
SlideInputs = Annotated[list[Path], typer.Argument(help="Slide files or folders of slides.")]
#: SLIDE: one slide.
OneSlide = Annotated[Path, typer.Argument(help="A slide OpenSlide reads (SVS, NDPI, TIFF, ...).")]


#: What ``--annotations`` of a command over several slides may be.
SLIDES_OR_FOLDER = "(one slide), or a folder of <slide>.geojson"


def annotations_option(scope: str = SLIDES_OR_FOLDER, use: str = "") -> Any:
    """``--annotations``: GeoJSON or a label-mask PNG; ``scope`` says of which slides,
    ``use`` what the command does with them."""
    return typer.Option(help=f"GeoJSON or label-mask PNG {scope}{use}.", rich_help_panel=INPUT)


#: ``--spacing-mm``: voxel size for CT files whose own is zero, negative or NaN.
SpacingMm = Annotated[
    str | None,
    typer.Option(
        "--spacing-mm",
        help="D,H,W voxel size in mm (slice, row, column) for files whose spacing is zero, "
        "negative or NaN; files with a valid spacing keep theirs.",
        rich_help_panel=INPUT,
    ),
]


# --- Outputs and re-runs ---


def out_option(help: str = "Output folder.") -> Any:
    """``--out``: the folder (or run directory) a command writes."""
    return typer.Option("--out", help=help, rich_help_panel=OUTPUTS)


#: ``--out``: the output folder.
OutDir = Annotated[Path, out_option()]


def landmarks_option(folder: bool = False, panel: str | None = None) -> Any:
    """``--landmarks``: Couinaud landmark points (``ct couinaud``; ``locate``: a folder too)."""
    also = ", or a folder of them (phantom-N for volume-N)" if folder else ""
    return typer.Option(
        help=f"JSON of landmark points in RAS mm (a phantom-N.json works as is){also}.",
        rich_help_panel=panel,
    )


def vessel_labels_option(of: str = "the segmentation", panel: str | None = None) -> Any:
    """``--vessel-labels``: the vessel label values of a segmentation (``ct couinaud``,
    ``locate``)."""
    return typer.Option(
        help=f"Vessel label values in {of}, e.g. ivc=3,hepatic_veins=4,portal_vein=5 "
        "(or right_/middle_/left_hepatic_vein=...).",
        rich_help_panel=panel,
    )


def overwrite_option(help: str) -> Any:
    """``--overwrite``: what the command redoes or replaces when asked."""
    return typer.Option(help=help, rich_help_panel=OUTPUTS)


def on_mismatch_option(done_before: str) -> Any:
    """``--on-mismatch redo|error``: what becomes of ``done_before`` (e.g. "A slide done before
    with other settings (checkpoint, ...)") on a re-run."""
    return typer.Option(
        help=f"{done_before}: redo it, or error (refuse it, naming what differs).",
        rich_help_panel=OUTPUTS,
    )


#: ``--resume``: continue a training run.
Resume = Annotated[
    bool,
    typer.Option(help="Continue from RUN/checkpoints/last.ckpt.", rich_help_panel=OUTPUTS),
]
#: ``--overwrite`` of a training run.
OverwriteRun = Annotated[
    bool,
    overwrite_option("Replace the run already in RUN (a new run needs it empty)."),
]


# --- Resolution ---


def magnification_option(default: str) -> Any:
    """``--magnification`` of the tiles; ``default`` says what applies without it."""
    return positive_option(f"Magnification of the tiles (default: {default}).", panel=RESOLUTION)


#: ``--magnification`` of the tiles, for commands that read a checkpoint's training one.
Magnification = Annotated[
    float | None, magnification_option("a checkpoint's training one, else 20")
]
#: ``--mpp`` of the tiles.
Mpp = Annotated[
    float | None, positive_option("Microns per pixel of the tiles instead.", panel=RESOLUTION)
]
#: ``--mpp-of-scan``: the scan's microns per pixel, for slides whose files lack it.
ScanMpp = Annotated[
    float | None,
    typer.Option(
        "--mpp-of-scan",
        help="Microns per pixel of the scan, for slides lacking it.",
        callback=positive_number,
        rich_help_panel=RESOLUTION,
    ),
]
#: ``--magnification-of-scan``: the scan's objective power, for slides whose files lack it.
ScanMagnification = Annotated[
    float | None,
    typer.Option(
        "--magnification-of-scan",
        help="Objective power of the scan, for slides lacking it.",
        callback=positive_number,
        rich_help_panel=RESOLUTION,
    ),
]
#: ``--allow-upsampling``: a resolution finer than the scan's.
AllowUpsampling = Annotated[
    bool,
    typer.Option(
        help="Allow a resolution finer than the scan's (interpolated; warned).",
        rich_help_panel=RESOLUTION,
    ),
]

# --- Scale search, tiles ---

#: The magnifications a scale search tries by default (``inference.scale_search.DEFAULT_SCALES``;
#: written out here so that ``--help`` does not import torch).
DEFAULT_SCALES_TEXT = "10,12,14,17,20,25,30,35,43"


def scales_option(help: str) -> Any:
    """``--scales``: magnifications, comma-separated, for a scale search."""
    return typer.Option(help=help, rich_help_panel=RESOLUTION)


def search_points_option(help: str, panel: str | None = RESOLUTION) -> Any:
    """The number (at least 1) of random tissue points of a scale search."""
    return typer.Option(min=1, help=help, rich_help_panel=panel)


#: ``--stride`` of the tile grid, a fraction of the tile.
Stride = Annotated[
    float,
    positive_option(
        "Tile step as a fraction of the tile: 1 (no overlap), 0.5, 0.25, ...",
        max=1.0,
        panel=TILES,
    ),
]


def min_tissue_option(verb: str) -> Any:
    """``--min-tissue`` in [0, 1]: the least tissue share of a tile to ``verb`` it."""
    return fraction_option(f"Least tissue share of a tile to {verb} it.", panel=TILES)


# --- Model & precision ---


def batch_size_option(items: str = "Images", panel: str = MODEL) -> Any:
    """``--batch-size`` (at least 1): how many ``items`` go through the model at once."""
    return typer.Option(min=1, help=f"{items} per batch.", rich_help_panel=panel)


#: ``--batch-size`` of images.
BatchSize = Annotated[int, batch_size_option()]


def workers_option(panel: str = MODEL) -> Any:
    """``--workers`` (at least 0): DataLoader worker processes."""
    return typer.Option(
        min=0, help="Data loader processes (0: load in the main process).", rich_help_panel=panel
    )


#: ``--workers``: DataLoader worker processes.
Workers = Annotated[int, workers_option()]


def precision_option(note: str = "") -> Any:
    """``--precision``: one vocabulary for every command; ``note`` adds a command's own."""
    return typer.Option(
        help=f"auto (bf16/fp16 where native, else fp32), fp32, bf16 or fp16{note}.",
        rich_help_panel=MODEL,
    )


#: ``--precision``: auto, fp32, bf16 or fp16.
Precision = Annotated[str, precision_option()]
#: ``--compile`` of the tile commands (``slide``, ``features``).
Compile = Annotated[
    bool,
    typer.Option(
        "--compile/--no-compile",
        help="torch.compile the model once for the run (seconds to a minute of compiling, "
        "cached for later runs; pays off over thousands of tiles, most on a GPU).",
        rich_help_panel=MODEL,
    ),
]

#: ``--decode`` of the tile commands (``slide``, ``features``).
Decode = Annotated[
    str,
    typer.Option(
        help="Where JPEG tiles are decoded: auto (on a CUDA GPU when torchvision can, else by "
        "the readers), cpu (by the readers) or device (where the model runs).",
        rich_help_panel=MODEL,
    ),
]


def agreement_tiles_option(redone: str, measure: str) -> Any:
    """``--agreement-tiles``: tiles ``redone`` at fp32 under bf16/fp16 to ``measure``."""
    return typer.Option(
        min=0,
        help=f"Tiles {redone} at fp32 under bf16/fp16 to measure {measure} (default: 1% of "
        "the tiles, 16 to 256; 0: no check).",
        rich_help_panel=MODEL,
    )


#: ``--stain-normalize/--no-stain-normalize``: the checkpoint's recorded stain target.
StainNormalize = Annotated[
    bool,
    typer.Option(
        help="Normalise tiles to the stain target a checkpoint's training tiles were "
        "normalised to (wsi tile --stain-normalize); --no-stain-normalize: the slide's own "
        "colours.",
        rich_help_panel=MODEL,
    ),
]

# --- Distribution and training ---

#: ``--devices`` of ``features``: the slides dealt over N devices per node, one rank a slide.
SlideDevices = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Share the slides out over N devices per node (Lightning's launcher); each "
        "slide is encoded by one process.",
        rich_help_panel=DISTRIBUTED,
    ),
]
#: ``--devices`` of an inference command: Lightning's ``trainer.predict`` over N devices.
PredictDevices = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Run through Lightning's trainer.predict on N devices "
        "(tiles sharded by its distributed sampler).",
        rich_help_panel=DISTRIBUTED,
    ),
]
#: ``--accelerator`` with ``--devices``.
Accelerator = Annotated[
    str, typer.Option(help="Lightning accelerator with --devices.", rich_help_panel=DISTRIBUTED)
]


def epochs_option() -> Any:
    """``--epochs`` (at least 1) of a training command."""
    return typer.Option(min=1, help="Passes over the training split.", rich_help_panel=TRAINING)


def learning_rate_option() -> Any:
    """``--lr`` of a training command: a finite number above 0."""
    return positive_option("Learning rate.", panel=TRAINING)


def training_seed_option() -> Any:
    """``--seed`` of a training command."""
    return seed_option("the run (initial weights, data order, augmentation)", panel=TRAINING)


def num_nodes_option() -> Any:
    """``--num-nodes`` (at least 1) with ``--devices``."""
    return typer.Option(
        min=1,
        help="Nodes with --devices (Lightning's cluster environment, e.g. SLURM).",
        rich_help_panel=DISTRIBUTED,
    )


def train_devices_option() -> Any:
    """``--devices`` of a training command, in Lightning's own spelling."""
    return typer.Option(help="Lightning devices, e.g. auto, 1, 4.", rich_help_panel=DISTRIBUTED)


def strategy_option() -> Any:
    """``--strategy`` of a training command."""
    return typer.Option(help="Lightning strategy, e.g. ddp.", rich_help_panel=DISTRIBUTED)


#: ``--num-nodes``.
NumNodes = Annotated[int, num_nodes_option()]
#: ``--devices`` of a training command.
TrainDevices = Annotated[str, train_devices_option()]
#: ``--strategy`` of a training command.
Strategy = Annotated[str, strategy_option()]


# --- Batches over inputs, seeds ---


def parallel_option(help: str) -> Any:
    """``--workers`` (at least 1) of a batch command: inputs worked on in parallel."""
    return typer.Option(min=1, help=help)


def strict_option(item: str) -> Any:
    """``--strict``: stop at the first bad ``item`` instead of reporting it at the end."""
    return typer.Option(help=f"Stop at the first bad {item}.")


def seed_option(of: str, panel: str | None = None) -> Any:
    """``--seed``: the seed ``of`` what (``"the patient split"``)."""
    return typer.Option(help=f"Seed of {of}.", rich_help_panel=panel)
