"""Where the viewer's web files are, and whether OpenSeadragon (from npm) is installed."""

from __future__ import annotations

import json
from pathlib import Path

#: The viewer's pages, scripts and styles; ``package.json`` pins the browser libraries.
WEB_DIR = Path(__file__).parent / "web"
#: OpenSeadragon's browser build as ``npm ci`` installs it.
OPENSEADRAGON_DIR = WEB_DIR / "node_modules" / "openseadragon" / "build" / "openseadragon"
#: The command that installs it (from the repository root).
INSTALL_HINT = "npm ci --prefix src/oncoscope/viewer/web"


def openseadragon_version() -> str | None:
    """The installed OpenSeadragon version, or None when ``npm ci`` has not been run."""
    if not (OPENSEADRAGON_DIR / "openseadragon.min.js").is_file():
        return None
    try:
        package = json.loads((OPENSEADRAGON_DIR.parents[1] / "package.json").read_text("utf-8"))
    except (OSError, ValueError):
        return "unknown"
    return str(package.get("version", "unknown"))
