"""Digest of the weights a tiny fp32 training run produces: equal digests = bit-identical training.

    python benchmarks/weights_digest.py [extra train options]

Trains the first 4 steps of a 2-epoch schedule (batch 8, evaluation every 2, seed 7, fp32) on
the synthetic task files of the tests, from the default encoder, and prints one sha256 over every
tensor (name, dtype, shape, bytes) of RUN/last and RUN/best. The digests depend on the CPU (its
fp32 kernels): compare runs on one machine. A refactor that must not change training is checked by running
this before and after it; the docs' measured figures stand when the digests match.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from fixtures import write_task_data  # noqa: E402


def digest(checkpoint: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(checkpoint.glob("*.safetensors")):
        tensors = load_file(str(f))
        for k in sorted(tensors):
            if k.startswith("rng."):  # resume state's generator states: not weights
                continue
            t = tensors[k]
            h.update(k.encode())
            h.update(f"{t.dtype}{t.shape}".encode())
            h.update(t.tobytes())
    return h.hexdigest()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = write_task_data(Path(tmp) / "data")
        run = Path(tmp) / "run"
        subprocess.run([sys.executable, "-m", "bertmtl", "train", "--data-dir", str(data), "--out", str(run),
                        "--stop-at-step", "4", "--batch-size", "8", "--eval-every", "2", "--precision", "fp32",
                        "--seed", "7", *sys.argv[1:]], check=True, capture_output=True, cwd=ROOT,
                       # one thread: CPU reductions split over threads sum in another order
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
        for name in ("last", "best"):
            print(name, digest(run / name))


if __name__ == "__main__":
    main()
