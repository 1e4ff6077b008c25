"""``oncoscope explain``: class activation maps of a checkpoint on images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oncoscope.cli._common import console, exit_on_failures, progress_bar, user_errors
from oncoscope.cli.options import BatchSize, Checkpoint, OutDir


def explain(
    checkpoint: Checkpoint,
    images: Annotated[
        list[Path] | None, typer.Argument(help="Image files (or use --data and --split).")
    ] = None,
    out: OutDir = Path("explain"),
    method: Annotated[
        str,
        typer.Option(
            help="gradcam, gradcam++, layercam, scorecam, cam, attention, smoothgrad, or guided "
            "(SmoothGrad where the class map points; class-map models)."
        ),
    ] = "gradcam",
    layer: Annotated[
        list[str] | None,
        typer.Option(help="Layer to read (repeat for several, averaged); default: last stage."),
    ] = None,
    layer_index: Annotated[
        int, typer.Option(help="Feature stage when no --layer: -1 last, -2 finer (small lesions).")
    ] = -1,
    target: Annotated[
        str | None, typer.Option(help="Class to explain (default: each image's prediction).")
    ] = None,
    batch_size: BatchSize = 8,
    data: Annotated[Path | None, typer.Option(help="manifest.csv to take images from.")] = None,
    split: Annotated[str, typer.Option(help="Split of --data to explain.")] = "test",
) -> None:
    """Explain each image: overlay PNG, raw map .npy (0..1), and OUT/explain.csv."""
    from oncoscope.errors import InvalidOptionError
    from oncoscope.explain.cam import METHODS
    from oncoscope.explain.run import explain_images, manifest_images, manifest_lesion_masks

    with user_errors(out=out):
        if method not in METHODS:
            raise InvalidOptionError(
                f"unknown --method '{method}'; use one of {', '.join(METHODS)}"
            )
        keys = labels = masks = None
        paths: list[str] = [str(p) for p in images or []]
        if data is not None:
            if paths:
                raise InvalidOptionError("give image files or --data, not both")
            paths, keys, labels = manifest_images(data, split)
            masks = manifest_lesion_masks(data, split)
        if not paths:
            raise InvalidOptionError("no images: give image files or --data manifest.csv")
        with progress_bar() as bar:
            task = bar.add_task(f"explain ({method})", total=len(paths))
            report = explain_images(
                checkpoint,
                paths,
                out,
                method=method,
                layers=layer or (),
                stage=layer_index,
                target=target,
                batch_size=batch_size,
                keys=keys,
                labels=labels,
                lesion_masks=masks,
                manifest=data,
                on_image=lambda _path, _error: bar.advance(task),
            )
    if report.csv is not None:
        console.print(f"explained {len(report.rows)} image(s): {report.csv}")
    exit_on_failures(report.failures, "image(s)")


def register(app: typer.Typer) -> None:
    """Add ``explain`` to the main app."""
    app.command()(explain)
