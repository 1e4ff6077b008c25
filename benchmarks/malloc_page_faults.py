"""Training steps, a tray of slides and a training run with glibc's default allocator settings
and with large blocks kept (what oncoscope's commands do: ``oncoscope/allocator.py``).

Run by hand, never in the test suite:

    .venv/bin/python benchmarks/malloc_page_faults.py [--parts steps,slide,train]
        [--model sa_cam_efficientnet_lite0] [--steps 6] [--batch 16] [--image-px 256]
        [--slides 100] [--manifest ct/manifest.csv --recipe ct-cam --epochs 2]
        [--repeats 1] [--workdir DIR]

Every run is a fresh process, one torch thread (glibc reads ``MALLOC_*`` when a process starts;
``mallopt`` lasts for the process). Printed per run: wall seconds, user and system CPU seconds,
minor page faults and peak resident memory of that process (``wait4``'s resource usage).
``--repeats`` runs every setting of a part that many times, the settings alternating.

- ``steps``: one warm-up step, then ``--steps`` timed steps of forward, cross-entropy, backward
  and AdamW on random single-channel images, with glibc's defaults, with
  ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` raised in the environment, and with
  :func:`oncoscope.allocator.keep_large_blocks` called first; the figures are of the timed
  steps alone.
- ``slide``: the whole ``python -m oncoscope slide TRAY`` command over ``--slides`` small
  synthetic slides (``slide_batch.py``'s tray and random-weight resnet18 checkpoint), with
  ``ONCOSCOPE_GLIBC_MALLOC=default`` and without: does a long inference run's memory grow?
- ``train``: the whole ``python -m oncoscope train`` command on ``--manifest`` for
  ``--epochs`` epochs of ``--recipe``, the same two ways.

Why: glibc hands a block over its mmap threshold (at most 32 MiB by default) straight to the
kernel and gives it back on free, so each step's large activations are mapped, zero-filled page
by page and unmapped again.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from oncoscope.hardware import cpu_model

#: The training-step settings compared: a label, the environment added, and whether the child
#: calls ``keep_large_blocks()`` before its first step.
STEP_SETTINGS: dict[str, tuple[dict[str, str], bool]] = {
    "glibc defaults": ({}, False),
    "MALLOC_* variables": (
        {"MALLOC_MMAP_THRESHOLD_": str(4 << 30), "MALLOC_TRIM_THRESHOLD_": str(16 << 30)},
        False,
    ),
    "keep_large_blocks()": ({}, True),
}

#: The whole commands' settings: oncoscope's default, and glibc's own asked for.
COMMAND_SETTINGS = {
    "glibc defaults (ONCOSCOPE_GLIBC_MALLOC=default)": {"ONCOSCOPE_GLIBC_MALLOC": "default"},
    "large blocks kept (oncoscope's default)": {},
}

STEPS_CHILD = """
import sys, time
if sys.argv[5] == "keep":
    from oncoscope.allocator import keep_large_blocks
    assert keep_large_blocks()
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
print("timed", flush=True)
sys.stdin.readline()  # the parent reads the usage so far, then lets the timed steps run
for _ in range(steps):
    step()
"""


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("ONCOSCOPE_GLIBC_MALLOC", None)
    return {**env, **extra, "OMP_NUM_THREADS": "1"}


def _usage(child: subprocess.Popen[str] | subprocess.Popen[bytes]) -> dict[str, float]:
    """Wait for ``child``; its user s, system s, minor faults and peak RSS MiB.

    Raises:
        subprocess.CalledProcessError: the child failed (its figures would mean nothing).
    """
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise subprocess.CalledProcessError(child.returncode, child.args)
    return {
        "user": usage.ru_utime,
        "system": usage.ru_stime,
        "faults": usage.ru_minflt,
        "rss": usage.ru_maxrss / 1024,
    }


def _proc_times(pid: int) -> tuple[float, float, int]:
    """User s, system s and minor faults of a running process so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks, int(fields[7])


def run_steps(extra_env: dict[str, str], keep: bool, args: argparse.Namespace) -> list[float]:
    """Wall s, user s, system s, minor faults of the timed steps, and the child's peak RSS."""
    sizes = [str(args.steps), str(args.batch), str(args.image_px)]
    command = [sys.executable, "-c", STEPS_CHILD, args.model, *sizes, "keep" if keep else "-"]
    child = subprocess.Popen(
        command, env=_clean_env(extra_env), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    child.stdout.readline()
    user0, system0, faults0 = _proc_times(child.pid)
    start = time.perf_counter()
    child.stdin.write("\n")
    child.stdin.close()
    usage = _usage(child)
    wall = time.perf_counter() - start
    return [wall, usage["user"] - user0, usage["system"] - system0,
            usage["faults"] - faults0, usage["rss"]]  # fmt: skip


def run_command(command: list[str], extra_env: dict[str, str]) -> list[float]:
    """Wall s, user s, system s, minor faults and peak RSS MiB of a whole command (its output
    to a file, printed if it fails)."""
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        child = subprocess.Popen(
            command, env=_clean_env(extra_env), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            usage = _usage(child)
        except subprocess.CalledProcessError:
            log.seek(0)
            print(log.read()[-4000:], file=sys.stderr)
            raise
        wall = time.perf_counter() - start
    return [wall, usage["user"], usage["system"], usage["faults"], usage["rss"]]


def _row(label: str, figures: list[float]) -> str:
    wall, user, system, faults, rss = figures
    return f"| {label} | {wall:.1f} | {user:.1f} | {system:.1f} | {faults:,.0f} | {rss:,.0f} |"


HEADER = (
    "| setting | wall s | user s | system s | minor page faults | peak RSS MiB |\n"
    "|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="steps")
    parser.add_argument("--model", default="sa_cam_efficientnet_lite0")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image-px", type=int, default=256)
    parser.add_argument("--slides", type=int, default=100)
    parser.add_argument("--manifest", type=Path, default=None, help="for --parts train")
    parser.add_argument("--recipe", default="ct-cam")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each setting")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    parts = args.parts.split(",")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="malloc-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_model()}; one torch thread")
    if "steps" in parts:
        print(f"\n{args.model}, batch {args.batch}, {args.image_px} px, fp32, {args.steps} steps")
        print(HEADER)
        for _ in range(args.repeats):
            for label, (extra_env, keep) in STEP_SETTINGS.items():
                print(_row(label, run_steps(extra_env, keep, args)), flush=True)
    if "slide" in parts:
        from slide_batch import make_tray
        from slide_throughput import make_checkpoint

        checkpoint = workdir / "resnet18.ckpt"
        if not checkpoint.exists():
            make_checkpoint(checkpoint)
        tray = make_tray(workdir, args.slides, 5)
        print(f"\noncoscope slide over {args.slides} small synthetic slides, 0 workers")
        print(HEADER)
        for label, extra_env in [*COMMAND_SETTINGS.items()] * args.repeats:
            command = [
                sys.executable, "-m", "oncoscope", "slide", str(checkpoint), str(tray),
                "--out", str(workdir / "maps"), "--mpp", "0.5", "--stride", "1",
                "--batch-size", "16", "--workers", "0", "--overwrite",
            ]  # fmt: skip
            print(_row(label, run_command(command, extra_env)), flush=True)
    if "train" in parts:
        if args.manifest is None:
            parser.error("--parts train needs --manifest")
        print(f"\noncoscope train --recipe {args.recipe} --epochs {args.epochs}, fp32, 0 workers")
        print(HEADER)
        for label, extra_env in [*COMMAND_SETTINGS.items()] * args.repeats:
            command = [
                sys.executable, "-m", "oncoscope", "train", "--data", str(args.manifest),
                "--recipe", args.recipe, "--epochs", str(args.epochs), "--precision", "fp32",
                "--workers", "0", "--seed", "0", "--out", str(workdir / "run"), "--overwrite",
            ]  # fmt: skip
            print(_row(label, run_command(command, extra_env)), flush=True)


if __name__ == "__main__":
    main()
