"""``oncoscope view DIR``: serve a local web viewer over an output folder."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from oncoscope.cli._common import console, error_console, user_errors


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1).

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def register(app: typer.Typer) -> None:
    """Add the ``view`` command to the CLI."""

    @app.command()
    def view(
        folder: Annotated[
            Path, typer.Argument(help="An output folder of oncoscope (demo, slide, ct, evaluate).")
        ],
        port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8765,
        host: Annotated[
            str,
            typer.Option(
                help="Address to listen on; anything but loopback is reachable by others."
            ),
        ] = "127.0.0.1",
        browser: Annotated[
            bool, typer.Option("--browser/--no-browser", help="Open the page in a web browser.")
        ] = True,
    ) -> None:
        """Look at slides with heatmaps, CT slices with masks and CAMs, and reports in a browser."""
        import threading
        import webbrowser

        import uvicorn

        from oncoscope.viewer.app import create_app
        from oncoscope.viewer.assets import INSTALL_HINT, openseadragon_version

        with user_errors():
            web_app = create_app(folder)
        if not is_loopback(host):
            error_console.print(
                f"warning: listening on {host}: anyone who can reach this machine on port {port} "
                f"can see the images in {folder} (there is no login).",
                markup=False,
            )
        if openseadragon_version() is None:
            error_console.print(
                "warning: OpenSeadragon is not installed; slides will not show. "
                f"Run: {INSTALL_HINT}",
                markup=False,
            )
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        url = f"http://{shown}:{port}/"
        console.print(f"oncoscope viewer of {folder.resolve()} at {url} (Ctrl+C to stop)")
        if browser:
            threading.Timer(1.0, webbrowser.open, args=(url,)).start()
        uvicorn.run(web_app, host=host, port=port, log_level="warning")
