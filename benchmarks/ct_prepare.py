"""Speed and peak memory of ``ct prepare`` on LiTS-sized synthetic phantoms.

Run by hand, never in the test suite:

    .venv/bin/python benchmarks/ct_prepare.py [--patients 4] [--slices 96] [--size 512]

Each measurement runs in a fresh process; its peak memory is VmHWM from /proc (ru_maxrss would
carry over the generator's peak across exec), the workers' from RUSAGE_CHILDREN.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _measure(folder: Path, out: Path, workers: int) -> dict[str, float]:
    from oncoscope.ct.slice_dataset import PrepareOptions, prepare_dataset
    from oncoscope.ct.window import PRESETS

    start = time.perf_counter()
    report = prepare_dataset(
        folder,
        out,
        PrepareOptions(windows=(PRESETS["liver"],), ratio=(1.0, 0.0, 0.0)),
        workers=workers,
    )
    seconds = time.perf_counter() - start
    status = Path("/proc/self/status").read_text().splitlines()
    own = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "workers": workers,
        "seconds": round(seconds, 2),
        "slices": len(report.rows),
        "slices_per_s": round(len(report.rows) / seconds, 1),
        "peak_rss_mib_main": round(own),
        "peak_rss_mib_worker": round(children),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=4)
    parser.add_argument("--slices", type=int, default=96)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--measure", nargs=3, metavar=("FOLDER", "OUT", "WORKERS"))
    args = parser.parse_args()
    if args.measure:
        folder, out, workers = args.measure
        print(json.dumps(_measure(Path(folder), Path(out), int(workers))))
        return
    from oncoscope.ct.phantom import write_cohort

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "phantoms"
        write_cohort(folder, args.patients, shape=(args.slices, args.size, args.size), seed=0)
        print(f"{args.patients} phantoms of {args.slices} x {args.size} x {args.size} voxels")
        for workers in (1, 2):
            result = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--measure",
                    str(folder),
                    f"{scratch}/out{workers}",
                    str(workers),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            print(result.stdout.strip())


if __name__ == "__main__":
    main()
