"""``oncoscope view``: loopback by default, a warning for other hosts, errors for bad folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from oncoscope.cli import app


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("uvicorn.run", lambda web_app, **kwargs: calls.append(kwargs))
    return calls


def test_view_serves_on_loopback_by_default(tmp_path: Path, served: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(app, ["view", str(tmp_path), "--no-browser", "--port", "9123"])
    assert result.exit_code == 0, result.output
    assert served == [{"host": "127.0.0.1", "port": 9123, "log_level": "warning"}]
    assert "http://127.0.0.1:9123/" in result.output
    assert "warning: listening" not in result.output


def test_view_warns_for_other_hosts(tmp_path: Path, served: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(app, ["view", str(tmp_path), "--no-browser", "--host", "0.0.0.0"])
    assert result.exit_code == 0
    assert served[0]["host"] == "0.0.0.0"
    assert "warning: listening on 0.0.0.0" in result.output


def test_view_of_a_missing_folder_is_one_error_line(
    tmp_path: Path, served: list[dict[str, Any]]
) -> None:
    result = CliRunner().invoke(app, ["view", str(tmp_path / "nope"), "--no-browser"])
    assert result.exit_code == 2
    assert "is not a folder" in result.output
    assert served == []
