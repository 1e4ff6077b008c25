"""``oncoscope models`` and ``oncoscope doctor`` start without the heavy libraries (issue 18).

``import lightning`` alone takes seconds, ``import timm`` several: listing the models reads the
registry's table and the doctor reads versions from the installed metadata.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from oncoscope import doctor

HEAVY = {"lightning", "pytorch_lightning", "timm"}


@pytest.mark.parametrize(
    ("command", "absent"),
    [(["models"], HEAVY | {"torch"}), (["doctor", "--json"], HEAVY)],
)
def test_the_command_does_not_import_what_it_does_not_use(command, absent):
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from oncoscope.cli import app\n"
        f"r = CliRunner().invoke(app, {command!r})\n"
        "assert r.exit_code == 0, r.output\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(absent)!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_missing_distribution_is_reported_not_raised(monkeypatch):
    monkeypatch.setattr(doctor, "DISTRIBUTIONS", {"absent": "no-such-distribution-xyz"})
    facts = doctor.report()
    assert facts["versions"]["absent"] == "not installed"
    assert facts["versions"]["oncoscope"]
