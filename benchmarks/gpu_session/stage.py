"""Split HF encoder directories into fp16 shards small enough for the GPU lease's 64 MiB transfers.

    python benchmarks/gpu_session/stage.py MPNET_DIR MINILM_DIR DATA_DIR   # writes .gpu/ (git-ignored)

The lease copies at most 64 MiB per call and keeps git-ignored paths on a warm machine, so the
438 MB fp32 MPNet travels as fp16 shards over several quick calls (`carry: [".gpu/mp0"]`, then
mp1, ...) and `assemble.py` rebuilds fp32 directories there. fp16 rounding changes a weight by
at most 2^-11 of its value; training starts from those weights (stated beside the figures).
"""
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

SHARD = 52 * 2**20  # bytes of fp16 per shard, leaving room for the working tree in a 64 MiB call


def shard(src: Path, prefix: str, out: Path) -> None:
    tensors = load_file(str(src / "model.safetensors"))
    groups, size = [[]], 0
    for k in sorted(tensors):
        n = tensors[k].numel() * 2
        if size + n > SHARD and groups[-1]:
            groups.append([])
            size = 0
        groups[-1].append(k)
        size += n
    for i, keys in enumerate(groups):
        d = out / f"{prefix}{i}"
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: tensors[k].half().contiguous() if tensors[k].is_floating_point() else tensors[k]
                   for k in keys}, str(d / "part.safetensors"))
    cfg = out / f"{prefix}cfg"
    cfg.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.suffix in (".json", ".txt"):
            shutil.copy(f, cfg / f.name)


if __name__ == "__main__":
    out = Path(".gpu")
    shard(Path(sys.argv[1]), "mp", out)
    shard(Path(sys.argv[2]), "ml", out)
    shutil.copytree(sys.argv[3], out / "data", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*test-student*"))
