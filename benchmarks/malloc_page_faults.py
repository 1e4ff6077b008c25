"""Training steps on CPU with glibc's default allocator settings and with large blocks kept.

Run by hand, never in the test suite:

    .venv/bin/python benchmarks/malloc_page_faults.py [--model sa_cam_efficientnet_lite0]
                                                      [--steps 6] [--batch 16] [--image-px 256]

Each setting runs in a fresh process (glibc reads ``MALLOC_*`` when the process starts), one
torch thread: one warm-up step, then ``--steps`` timed steps of forward, cross-entropy, backward
and AdamW on random single-channel images. Printed per setting: wall seconds, user and system
CPU seconds, minor page faults and peak resident memory of the timed steps' process.

Why: glibc hands a block over its mmap threshold (at most 32 MiB by default) straight to the
kernel and gives it back on free, so each step's large activations are mapped, zero-filled page
by page and unmapped again. ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` raised
keep them in the heap for the next step.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from oncoscope.hardware import cpu_model

#: The settings compared: a label and the environment added to the child process.
SETTINGS = {
    "glibc defaults": {},
    "large blocks kept": {
        "MALLOC_MMAP_THRESHOLD_": str(4 << 30),
        "MALLOC_TRIM_THRESHOLD_": str(16 << 30),
    },
}

CHILD = """
import resource, sys, time
import torch
from oncoscope.models.registry import create_model
name, steps, batch, px = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(1)
torch.manual_seed(0)
model = create_model(name, num_classes=2, in_chans=1)
optimiser = torch.optim.AdamW(model.parameters(), 1e-3)
x, y = torch.randn(batch, 1, px, px), torch.randint(0, 2, (batch,))
def step():
    optimiser.zero_grad()
    out = model(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    torch.nn.functional.cross_entropy(out, y).backward()
    optimiser.step()
step()
before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(steps):
    step()
after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
print(wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime,
      after.ru_minflt - before.ru_minflt, after.ru_maxrss / 1024)
"""


def run_setting(extra_env: dict[str, str], args: argparse.Namespace) -> list[float]:
    """Wall s, user s, system s, minor faults and peak RSS in MiB of one child process."""
    env = {**os.environ, **extra_env, "OMP_NUM_THREADS": "1"}
    sizes = [str(args.steps), str(args.batch), str(args.image_px)]
    command = [sys.executable, "-c", CHILD, args.model, *sizes]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return [float(v) for v in done.stdout.split()[-5:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sa_cam_efficientnet_lite0")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image-px", type=int, default=256)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; {args.model}, batch {args.batch}, {args.image_px} px, fp32")
    print("| setting | wall s | user s | system s | minor page faults | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for label, extra_env in SETTINGS.items():
        wall, user, system, faults, rss = run_setting(extra_env, args)
        print(f"| {label} | {wall:.1f} | {user:.1f} | {system:.1f} | {faults:,.0f} | {rss:,.0f} |")


if __name__ == "__main__":
    main()
