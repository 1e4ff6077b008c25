"""``oncoscope benchmark-models``: parameters, FLOPs, latency and throughput (seed 000 Table II)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from oncoscope.cli._common import console, error_console, user_errors


def benchmark_models(
    models: Annotated[
        str | None,
        typer.Argument(
            help="Comma-separated model names (default: resnet50,seresnet50,efficientnet_b4,"
            "sa_efficientnet)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per timed forward pass.")] = 8,
    image_size: Annotated[int, typer.Option(min=8, help="Input side in pixels.")] = 224,
    iterations: Annotated[int, typer.Option(min=1, help="Timed forward passes (median).")] = 10,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed forward passes first.")] = 2,
    num_classes: Annotated[int, typer.Option(min=1, help="Classifier outputs.")] = 2,
    in_chans: Annotated[int, typer.Option(min=1, help="Input channels.")] = 3,
    device: Annotated[str, typer.Option(help="auto (CUDA if available), cpu, cuda...")] = "auto",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results as JSON here.")
    ] = None,
) -> None:
    """Parameters, GFLOPs per image, latency and throughput of models with random weights."""
    from oncoscope.io.atomic import write_json
    from oncoscope.models.benchmark import SEED000_MODELS
    from oncoscope.models.benchmark import benchmark_models as run_benchmark

    names = [n.strip() for n in models.split(",") if n.strip()] if models else list(SEED000_MODELS)
    with user_errors():
        record = run_benchmark(
            names,
            batch_size=batch_size,
            image_size=image_size,
            iterations=iterations,
            warmup=warmup,
            num_classes=num_classes,
            in_chans=in_chans,
            device=device,
            on_model_done=lambda row: error_console.print(
                f"{row.model}: {row.parameters:,} parameters, {row.gflops_per_image:.3f} "
                f"GFLOPs/image, {row.latency_ms:.1f} ms/batch",
                highlight=False,
            ),
        )
    table = Table(
        title=f"{record['device_name']} ({record['device']}, {record['threads']} threads): "
        f"batch {batch_size}, {image_size} px, median of {iterations}"
    )
    paper = record["paper_parameters_m"]
    headers = (
        "model",
        "parameters (M)",
        "paper (M)",
        "GFLOPs/image",
        "latency ms/batch",
        "images/s",
    )
    longest = max(len(row["model"]) for row in record["models"])
    table.add_column(headers[0], min_width=longest, no_wrap=True)  # names are never cut
    for header in headers[1:]:
        table.add_column(header, justify="right")
    for row in record["models"]:
        table.add_row(
            row["model"],
            f"{row['parameters'] / 1e6:.2f}",
            f"{paper[row['model']]:.1f}" if row["model"] in paper else "",
            f"{row['gflops_per_image']:.3f}",
            f"{row['latency_ms']:.1f}",
            f"{row['throughput_images_per_s']:.1f}",
        )
    console.print(table)
    console.print(record["flops_note"])
    if paper:
        console.print(record["paper_note"])
    if json_path is not None:
        write_json(json_path, record, indent=2)
        console.print(f"wrote {json_path}")


def register(app: typer.Typer) -> None:
    """Add ``benchmark-models`` to the main app."""
    app.command("benchmark-models")(benchmark_models)
