"""oncoscope's commands keep a training step's large blocks in glibc's heap, unless told not to.

Where a block lives is read from glibc's own accounting (``mallinfo2``: ``hblks`` counts the
blocks mapped on their own), in a fresh process each time: the settings last for a process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_LIBC = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
pytestmark = pytest.mark.skipif(not (_LIBC or "").startswith("glibc"), reason="glibc only")

# Allocates a 64 MiB tensor (over glibc's largest automatic mmap threshold, 32 MiB) and prints
# how many blocks glibc holds mapped on their own while it lives, after ``how`` set things up.
_SCRIPT = """
import ctypes, json, sys

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
how = sys.argv[1]
made = None
if how == "function":
    from oncoscope.allocator import keep_large_blocks
    made = keep_large_blocks()
elif how == "command":
    from typer.testing import CliRunner
    from oncoscope.cli import app
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    made = json.loads(result.output)["device"]["glibc_large_blocks_kept"]
import torch
before = libc.mallinfo2().hblks
block = torch.ones(16 << 20)  # 64 MiB of float32
during = libc.mallinfo2().hblks
print(json.dumps({"made": made, "mapped_alone": during - before, "sum": float(block.sum())}))
"""


def _run(how: str, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    clean.pop("GLIBC_TUNABLES", None)
    clean.pop("ONCOSCOPE_GLIBC_MALLOC", None)
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, how],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["sum"] == float(16 << 20)
    return result


def test_without_the_settings_a_large_block_is_mapped_on_its_own():
    assert _run("none")["mapped_alone"] == 1


def test_the_settings_keep_a_large_block_in_the_heap():
    result = _run("function")
    assert result == {**result, "made": True, "mapped_alone": 0}


def test_every_command_makes_the_settings_and_the_doctor_says_so():
    result = _run("command")
    assert result == {**result, "made": True, "mapped_alone": 0}


def test_the_user_can_opt_out():
    result = _run("command", ONCOSCOPE_GLIBC_MALLOC="default")
    assert result == {**result, "made": False, "mapped_alone": 1}


@pytest.mark.parametrize(
    "env",
    [
        {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)},
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"},
    ],
)
def test_a_users_own_malloc_settings_stand(env):
    # a 1 MiB threshold of the user's: the 64 MiB block stays mapped, oncoscope changes nothing
    result = _run("function", **env)
    assert result == {**result, "made": False, "mapped_alone": 1}


def test_other_glibc_tunables_do_not_stop_the_settings():
    result = _run("function", GLIBC_TUNABLES="glibc.cpu.x86_ibt=on")
    assert result == {**result, "made": True, "mapped_alone": 0}
