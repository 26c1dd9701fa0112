"""Peak memory of building LightGBM's training data from an int8 feature matrix.

    python -m bench.memory [--rows 1000000] [--features 780]

In a fresh process: allocate the int8 matrix (Numerai's medium set is 780 features), then build
and construct the LightGBM Dataset the way every member does (`pipeline.models.lgbm.int8_dataset`:
`lgb.Sequence` batches, small bin sample). Prints the process's peak RSS (VmHWM, interpreter and
libraries included) as a ratio to the int8 matrix's bytes. Bar: at most 2.0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
from pipeline.models.lgbm import int8_dataset

def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

rows, features = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
x = np.empty((rows, features), dtype=np.int8)
for start in range(0, rows, 100_000):
    x[start:start + 100_000] = rng.integers(0, 5, size=(min(100_000, rows - start), features), dtype=np.int8)
y = rng.random(rows).astype(np.float32)
before = hwm_mb()
start = time.perf_counter()
dataset = int8_dataset([(x, y, None)]).construct()
print(json.dumps({"matrix_mb": x.nbytes / 2**20, "hwm_before_mb": before, "hwm_mb": hwm_mb(),
                  "seconds": time.perf_counter() - start, "rows": dataset.num_data()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=780)
    args = parser.parse_args()
    out = subprocess.run([sys.executable, "-c", CHILD, str(args.rows), str(args.features)], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = found["hwm_mb"] / found["matrix_mb"]
    print(f"{args.rows:,} rows x {args.features} int8 features = {found['matrix_mb']:.0f} MB")
    print(f"peak RSS before the Dataset: {found['hwm_before_mb']:.0f} MB; while building it: {found['hwm_mb']:.0f} MB "
          f"({found['seconds']:.1f} s)")
    print(f"peak RSS / int8 matrix = {ratio:.2f} (bar: at most 2.0) -> {'OK' if ratio <= 2.0 else 'OVER'}")


if __name__ == "__main__":
    main()
