"""Start-up time of light commands: ``oncoscope --help``, ``models`` and ``doctor`` (issue 18).

Run by hand, never in the test suite:

    .venv/bin/python benchmarks/startup.py [--repeats 3] [--only help,models,doctor]
                                           [--json startup.json]

Each command runs ``--repeats`` times, each in a fresh Python process (``python -m oncoscope
...``, output discarded); the table gives the median wall time from process start to exit and
the median CPU time (user + system) of that process. ``import torch``, ``import timm`` and
``import lightning`` are timed the same way for scale. The load average before and after is
printed: on a machine shared with other jobs wall times move with it, CPU times much less.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from oncoscope.hardware import cpu_model

#: What is timed: a short name, the label printed and the arguments after the Python executable.
COMMANDS = {
    "help": ("oncoscope --help", ["-m", "oncoscope", "--help"]),
    "models": ("oncoscope models", ["-m", "oncoscope", "models"]),
    "doctor": ("oncoscope doctor", ["-m", "oncoscope", "doctor"]),
    "torch": ("python -c 'import torch'", ["-c", "import torch"]),
    "timm": ("python -c 'import timm'", ["-c", "import timm"]),
    "lightning": ("python -c 'import lightning'", ["-c", "import lightning"]),
}


def run_once(arguments: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one fresh ``python ARGUMENTS`` process, which
    must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, *arguments],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "120"},
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per command")
    parser.add_argument("--only", default=",".join(COMMANDS), help="comma-separated names")
    parser.add_argument("--json", help="also write the record here")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    for name in args.only.split(","):
        label, arguments = COMMANDS[name]
        runs = [run_once(arguments) for _ in range(args.repeats)]
        walls = [wall for wall, _ in runs]
        row = {
            "command": label,
            "wall_median_s": round(statistics.median(walls), 2),
            "wall_min_s": round(min(walls), 2),
            "wall_max_s": round(max(walls), 2),
            "cpu_median_s": round(statistics.median(cpu for _, cpu in runs), 2),
        }
        rows.append(row)
        print(
            f"{label:30} wall median {row['wall_median_s']:6.2f} s (min {row['wall_min_s']:.2f},"
            f" max {row['wall_max_s']:.2f}), CPU median {row['cpu_median_s']:.2f} s",
            flush=True,
        )
    record = {
        "machine": cpu_model(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "repeats": args.repeats,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
    }
    print(
        f"machine: {record['machine']}, {record['cores']} cores; load average before "
        f"{record['load_average_before']}, after {record['load_average_after']}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
