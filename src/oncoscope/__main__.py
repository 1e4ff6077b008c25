"""``python -m oncoscope`` runs the CLI."""

from oncoscope.cli import app

app(prog_name="oncoscope")
