"""On the GPU machine: rebuild fp32 HF directories (.gpu/mpnet, .gpu/minilm) from stage.py's shards."""
from pathlib import Path
import shutil

from safetensors.torch import load_file, save_file


def build(prefix: str, out: Path) -> None:
    g = Path(".gpu")
    tensors = {}
    for p in sorted(g.glob(f"{prefix}[0-9]*/part.safetensors")):
        tensors.update(load_file(str(p)))
    tensors = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    for f in (g / f"{prefix}cfg").iterdir():
        shutil.copy(f, out / f.name)
    print(out, len(tensors), "tensors", f"{sum(v.numel() for v in tensors.values()) / 1e6:.1f}M", flush=True)


if __name__ == "__main__":
    build("mp", Path(".gpu/mpnet"))
    build("ml", Path(".gpu/minilm"))
