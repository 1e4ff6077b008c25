"""The ``torch.distributed`` group of a run over several processes, ended before Python exits.

Lightning starts the group (gloo on CPUs, NCCL on GPUs) and ends it at exit only for NCCL. A
gloo group left to the interpreter's own teardown can abort the process (``terminate called
without an active exception``, exit -6) after every output was written: its worker threads
still hold tensors when Python is already shutting down (pytorch/pytorch#190489). Written here
because neither torch nor Lightning ends a gloo group at exit.
"""

from __future__ import annotations

import atexit
import sys

_registered = False


def end_process_group_at_exit() -> None:
    """Have the default process group destroyed when Python exits normally, whatever its backend.

    Call it before a run that may start a group; a run without one is left as it is, and calling
    it again adds nothing. The group is destroyed only if it is still there at exit.
    """
    global _registered
    if not _registered:
        atexit.register(_end_process_group)
        _registered = True


def _end_process_group() -> None:
    distributed = sys.modules.get("torch.distributed")  # never imports torch at exit
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()
