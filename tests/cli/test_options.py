"""Options several commands share are declared once: same flag, help, checks and help panel in
every command that takes them; the long commands list their options in help panels; a
command's options object is made from its options of the same names."""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Any

import pytest
import typer
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.cli._common import options_from

ROOT = typer.main.get_command(app)


def _command(path: str) -> Any:
    command = ROOT
    for name in path.split():
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


def _options(path: str) -> dict[str, Any]:
    """The command's options by their first flag (``--mpp``)."""
    return {p.opts[0]: p for p in _command(path).params if p.opts[0].startswith("--")}


def _declaration(option: Any) -> tuple[Any, ...]:
    callback = getattr(option.callback, "__name__", None)
    return (
        option.help,
        option.min,
        option.max,
        callback,
        tuple(option.secondary_opts),
        option.rich_help_panel,
    )


OPTION_ROW = re.compile(r"^│ {1,4}(?:\* +)?(--[a-z-]+)\s")
SHARED = [
    ("--mpp", ["slide", "features", "wsi tile"]),
    ("--mpp-of-scan", ["slide", "features", "scale", "wsi tile"]),
    ("--magnification-of-scan", ["slide", "features", "scale", "wsi tile"]),
    ("--allow-upsampling", ["slide", "features", "scale"]),
    ("--stride", ["slide", "features"]),
    ("--workers", ["slide", "features", "evaluate", "compare"]),
    ("--workers", ["mil train", "train"]),  # in their Training panel
    ("--precision", ["slide", "features", "mil train"]),
    ("--stain-normalize", ["slide", "features", "scale"]),
    ("--compile", ["slide", "features"]),
    ("--decode", ["slide", "features"]),
    # --devices differs on purpose: slide shards a slide's tiles, features deals out slides
    ("--accelerator", ["slide", "features"]),
    ("--num-nodes", ["slide", "features", "mil train", "train"]),
    ("--strategy", ["mil train", "train"]),
    ("--resume", ["mil train", "train"]),
    ("--spacing-mm", ["ct prepare", "ct preprocess", "ct couinaud", "ct segment-em", "locate"]),
]


@pytest.mark.parametrize(("flag", "commands"), SHARED)
def test_a_shared_option_reads_the_same_in_every_command(flag: str, commands: list[str]) -> None:
    declarations = {command: _declaration(_options(command)[flag]) for command in commands}
    assert len(set(declarations.values())) == 1, declarations
    assert all(_options(command)[flag].help for command in commands)


def test_precision_has_one_vocabulary_and_train_names_the_old_spellings() -> None:
    vocabulary = "auto (bf16/fp16 where native, else fp32), fp32, bf16 or fp16"
    for command in ("slide", "features", "mil train", "train"):
        assert _options(command)["--precision"].help.startswith(vocabulary), command
    assert "32 and 16: earlier spellings" in _options("train")["--precision"].help


@pytest.mark.parametrize(
    ("command", "panels"),
    [
        (
            "slide",
            {
                "Input": ["--annotations"],
                "Resolution": [
                    "--magnification",
                    "--mpp",
                    "--auto-scale",
                    "--scales",
                    "--scale-points",
                    "--allow-upsampling",
                    "--mpp-of-scan",
                    "--magnification-of-scan",
                ],
                "Tiles": ["--stride", "--min-tissue"],
                "Model & precision": [
                    "--batch-size",
                    "--workers",
                    "--precision",
                    "--compile",
                    "--decode",
                    "--agreement-tiles",
                    "--stain-normalize",
                ],
                "Distributed": ["--devices", "--accelerator", "--num-nodes"],
                "Outputs": ["--out", "--heatmap-class", "--overwrite", "--on-mismatch"],
            },
        ),
        (
            "features",
            {
                "Model & precision": [
                    "--weights",
                    "--scratch",
                    "--model-kwargs",
                    "--mean",
                    "--std",
                    "--batch-size",
                    "--workers",
                    "--precision",
                    "--compile",
                    "--decode",
                    "--agreement-tiles",
                    "--stain-normalize",
                ],
                "Resolution": [
                    "--magnification",
                    "--mpp",
                    "--allow-upsampling",
                    "--mpp-of-scan",
                    "--magnification-of-scan",
                ],
                "Tiles": ["--tile-px", "--stride", "--min-tissue"],
                "Distributed": ["--devices", "--accelerator", "--num-nodes"],
                "Outputs": ["--out", "--overwrite", "--on-mismatch"],
            },
        ),
        (
            "train",
            {
                "Input": ["--data", "--recipe", "--config", "--check-images"],
                "Model & precision": [
                    "--model",
                    "--image-size",
                    "--pretrained",
                    "--weights",
                    "--precision",
                ],
                "Training": [
                    "--epochs",
                    "--batch-size",
                    "--lr",
                    "--optimizer",
                    "--scheduler",
                    "--stain-augment",
                    "--sampling",
                    "--seed",
                    "--workers",
                ],
                "Distributed": ["--devices", "--strategy", "--num-nodes"],
                "Outputs": ["--out", "--resume", "--overwrite"],
            },
        ),
    ],
)
def test_long_commands_list_their_options_in_help_panels(
    command: str, panels: dict[str, list[str]]
) -> None:
    result = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    seen: dict[str, list[str]] = {}
    panel = None
    for line in result.output.splitlines():
        if line.startswith("╭─ "):
            panel = line.removeprefix("╭─ ").split(" ─")[0]
            continue
        row = OPTION_ROW.match(line)  # continuation rows are indented further
        if panel and row and row.group(1) != "--help":
            seen.setdefault(panel, []).append(row.group(1))
    assert seen == panels
    assert list(seen) == list(panels)  # the panels in this order


@pytest.mark.parametrize("command", ["ct prepare", "wsi tile", "scale", "locate", "mil train"])
def test_every_option_of_a_grouped_command_has_a_panel(command: str) -> None:
    loose = [flag for flag, p in _options(command).items() if p.rich_help_panel is None]
    allowed = {"--seed", "--workers", "--strict", "--points", "--bias"}
    assert set(loose) <= allowed, loose


@dataclasses.dataclass(frozen=True)
class _Options:
    size_px: int
    label: str = "none"
    ratio: tuple[int, int] = (1, 1)
    kept: int = 7


def _made_by(args: list[str], **given: Any) -> _Options:
    made: list[_Options] = []
    tool = typer.Typer()

    @tool.command()
    def run(
        ctx: typer.Context,
        size_px: Annotated[int, typer.Option("--size")] = 3,
        label: str = "none",
        split: str = "1:1",
        other: int = 0,
    ) -> None:
        made.append(options_from(_Options, ctx, **given))

    result = CliRunner().invoke(tool, args)
    if result.exception is not None:
        raise result.exception
    return made[0]


def test_options_from_takes_the_options_of_the_same_names_and_the_given_values() -> None:
    options = _made_by(["--size", "12", "--label", "x", "--other", "5"], ratio=(3, 1))
    assert options == _Options(size_px=12, label="x", ratio=(3, 1), kept=7)
    assert _made_by([]) == _Options(size_px=3)


def test_options_from_refuses_a_given_name_that_is_no_field() -> None:
    with pytest.raises(TypeError, match="no field ratoi"):
        _made_by([], ratoi=(3, 1))


@pytest.mark.parametrize(
    ("command", "module", "name", "not_options"),
    [
        ("slide", "oncoscope.inference.slide_inference", "SlideOptions", {"scales"}),
        ("features", "oncoscope.features.extract", "FeatureOptions", set()),
        ("locate", "oncoscope.locate.run", "LocateOptions", {"seed"}),
        (
            "wsi tile",
            "oncoscope.pathology.tile_dataset",
            "TileOptions",
            {"ratio", "thumbnail_px", "min_tissue_um2", "stain_reference"},
        ),
        (
            "ct prepare",
            "oncoscope.ct.slice_dataset",
            "PrepareOptions",
            {"windows", "ratio", "chain"},
        ),
    ],
)
def test_every_field_of_a_commands_options_object_is_one_of_its_options(
    command: str, module: str, name: str, not_options: set[str]
) -> None:
    """The options object takes its fields from the command's options by name: a renamed option
    must not leave a field at its default unnoticed."""
    import importlib

    cls = getattr(importlib.import_module(module), name)
    fields = {f.name for f in dataclasses.fields(cls)}
    options = {p.name for p in _command(command).params}
    assert fields - not_options <= options, fields - not_options - options


def test_the_default_scales_of_the_help_are_the_scale_searchs() -> None:
    from oncoscope.cli.options import DEFAULT_SCALES_TEXT
    from oncoscope.inference.scale_search import DEFAULT_SCALES, parse_scales

    assert parse_scales(DEFAULT_SCALES_TEXT) == list(DEFAULT_SCALES)
    for command in ("slide", "scale"):
        assert _options(command)["--scales"].default == DEFAULT_SCALES_TEXT
