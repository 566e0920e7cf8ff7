"""Summarise the GPU runs: ms/step (timing runs) and the dev table (quality runs)."""
import json, sys
from pathlib import Path

R = Path(sys.argv[1])


def recs(run):
    p = run / "metrics.jsonl"
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()] if p.exists() else []


print("timing (alone on the GPU, 60 steps, ms/step between the first and last logged step):")
for run in sorted(R.glob("time-*")):
    if not run.is_dir(): continue
    tr = [r for r in recs(run) if r.get("type") == "train"]
    st = [r for r in recs(run) if r.get("type") == "start"]
    spe = st[0]["steps_per_epoch"] if st else None
    if len(tr) >= 2:
        ms = (tr[-1]["time"] - tr[0]["time"]) / (tr[-1]["step"] - tr[0]["step"]) * 1000
        print(f"  {run.name:<22} {ms:7.1f} ms/step  -> {ms * spe / 1000:6.1f} s of steps per epoch ({spe} steps); "
              f"precision {st[0].get('precision')}")
print("quality (2 epochs, dev after each epoch; runs shared the GPU):")
for run in sorted(R.glob("q-*")):
    if not run.is_dir(): continue
    rs = recs(run)
    ev = [r for r in rs if r.get("type") == "eval"]
    tr = [r for r in rs if r.get("type") == "train"]
    wall = (tr[-1]["time"] - tr[0]["time"]) if len(tr) > 1 else float("nan")
    for r in ev:
        print(f"  {run.name:<24} ep {r['epoch']:.2f}  SST {r.get('sst_acc', float('nan')):.3f} (F1 {r.get('sst_f1', float('nan')):.3f})  "
              f"Quora {r.get('para_acc', float('nan')):.3f}  STS {r.get('sts_corr', float('nan')):.3f}  overall {r.get('overall', float('nan')):.3f}")
    print(f"  {run.name:<24} train-steps wall {wall:.0f} s (shared GPU)")
