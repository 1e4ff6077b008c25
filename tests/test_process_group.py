"""A run's ``torch.distributed`` group is destroyed before Python exits, whatever its backend."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# A gloo group of one process. The first handler registered runs last (atexit is last in, first
# out), so it sees whether the group outlived every later handler, ours included.
_SCRIPT = """
import atexit, sys
import torch.distributed as dist
from oncoscope.process_group import end_process_group_at_exit

atexit.register(lambda: print("at exit, group alive:", dist.is_initialized(), flush=True))
if sys.argv[1] == "end":
    end_process_group_at_exit()
    end_process_group_at_exit()  # twice: registers once
dist.init_process_group("gloo", init_method=f"file://{sys.argv[2]}", rank=0, world_size=1)
parts = [None]
dist.all_gather_object(parts, {"rank": 0})
print("gathered:", parts, flush=True)
"""


def _run(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "group.py"
    script.write_text(textwrap.dedent(_SCRIPT))
    store = tmp_path / f"store-{mode}"
    return subprocess.run(
        [sys.executable, str(script), mode, str(store)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(("mode", "alive"), [("end", "False"), ("leave", "True")])
def test_the_group_is_destroyed_before_the_interpreter_exits(
    tmp_path: Path, mode: str, alive: str
) -> None:
    """With the call, the group is gone before exit; without it (the control) it is still up
    when Python starts tearing down, which is what aborts gloo runs now and then."""
    done = _run(tmp_path, mode)
    if mode == "end":
        assert done.returncode == 0, done.stderr[-2000:]
    else:
        # The control may die of the very abort the call prevents (SIGABRT, "terminate called
        # without an active exception": 1 of 55 runs on AMD Zen 3, 2 cores); both ends count.
        assert done.returncode in (0, -signal.SIGABRT), done.stderr[-2000:]
    assert "gathered: [{'rank': 0}]" in done.stdout
    assert f"at exit, group alive: {alive}" in done.stdout, done.stdout
    assert done.stdout.count("at exit") == 1
