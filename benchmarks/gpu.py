"""GPU benchmark (run where a CUDA device is present), ratios measured in one run:

1. encoder training throughput (forward + backward, train mode) in bf16 autocast: ours vs
   transformers.BertModel with attn_implementation="sdpa", same weights, same batches;
2. one full default multi-task epoch (`bertmtl train` defaults, --epochs 1): wall time in
   fp32 vs bf16 (and bf16 with --compile), with the time per training step beside it.

    python benchmarks/gpu.py [--pretrained DIR] [--data-dir DIR] [--rounds 20]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_dir, encoder_flops, interleaved, matmul_gflops  # noqa: E402

from bertmtl.model import BertModel  # noqa: E402
from bertmtl.encoders.tokenizer import EncoderTokenizer  # noqa: E402
from bertmtl.encoders.weights import resolve  # noqa: E402


def encoder_throughput(pretrained: Path, data: Path, rounds: int) -> None:
    import csv

    import transformers

    dev = torch.device("cuda")
    ours = BertModel.from_pretrained(pretrained).to(dev).train()
    hf = transformers.BertModel.from_pretrained(str(pretrained), attn_implementation="sdpa").to(dev).train()
    tok = EncoderTokenizer.from_dir(pretrained)
    with open(data / "ids-sst-train.csv", newline="", encoding="utf-8") as f:
        sents = [r["sentence"] for r in csv.DictReader(f, delimiter="\t")]
    rng = random.Random(0)
    mm = matmul_gflops(8192, device="cuda", dtype=torch.bfloat16)
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}; 8192^3 bf16 matmul {mm / 1000:.0f} TFLOP/s")
    print(f"{'batch':<28}{'ours sent/s':>12}{'HF sdpa':>10}{'ours/HF':>9}{'ours TF/s':>10}")
    for label, n, fixed in (("64 x 128 tokens", 64, 128), ("256 SST sentences (mix)", 256, None),
                            ("32 SST sentences (mix)", 32, None)):
        if fixed:
            ids = torch.randint(1000, 20000, (n, fixed), device=dev)
            mask = torch.ones_like(ids)
        else:
            b = tok(rng.sample(sents, n))
            ids, mask = b.input_ids.to(dev), b.attention_mask.to(dev)

        def step(m, is_hf):
            def run():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = m(input_ids=ids, attention_mask=mask) if is_hf else m(ids, mask)
                    loss = out.last_hidden_state.float().mean() + out.pooler_output.float().mean()
                loss.backward()
                m.zero_grad(set_to_none=True)
            return run

        t = interleaved({"ours": step(ours, False), "hf": step(hf, True)}, rounds=rounds, inner=5, warmup=3, device="cuda")
        flops = 3 * encoder_flops(ours.config, ids.shape[0], ids.shape[1])
        print(f"{label:<28}{n / t['ours']:>12.0f}{n / t['hf']:>10.0f}{t['hf'] / t['ours']:>9.3f}{flops / t['ours'] / 1e12:>10.1f}")


def step_seconds(metrics_jsonl: Path) -> float:
    """Seconds per training step between the first and last logged steps (no loading, eval or saving)."""
    from bertmtl.sinks.metrics_log import read_records

    recs = [r for r in read_records(metrics_jsonl)[0] if r["type"] == "train"]
    return (recs[-1]["time"] - recs[0]["time"]) / (recs[-1]["step"] - recs[0]["step"])


def epoch_times(pretrained: Path, data: Path) -> None:
    from bertmtl.runs.progress import SilentReporter
    from bertmtl.training.loop import TrainConfig, train

    times, steps = {}, {}
    # The steps-only figure tells a slow step from fixed costs (tokenising, evaluation, saving);
    # the compiled row shows whether fusing away autocast's cast kernels pays at this model size.
    for label, precision, compiled in (("fp32", "fp32", False), ("bf16", "bf16", False),
                                       ("bf16 --compile", "bf16", True)):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(data_dir=str(data), out=str(Path(tmp) / "run"), encoder=str(pretrained),
                              epochs=1, precision=precision, device="cuda", compile=compiled)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            s = train(cfg, reporter=SilentReporter())
            torch.cuda.synchronize()
            times[label] = time.perf_counter() - t0
            steps[label] = step_seconds(Path(tmp) / "run" / "metrics.jsonl")
            m = s["last_metrics"]
            print(f"default epoch, {label}: {times[label]:.1f} s, {steps[label] * 1000:.1f} ms/step ({s['step']} steps, "
                  f"dev overall {m['overall']:.3f}: SST {m['sst_acc']:.3f} Quora {m['para_acc']:.3f} "
                  f"STS {m['sts_corr']:.3f})", flush=True)
    for label in ("bf16", "bf16 --compile"):
        print(f"{label} speed-up over fp32 for a default epoch: {times['fp32'] / times[label]:.2f}x "
              f"(steps only: {steps['fp32'] / steps[label]:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", "--pretrained", dest="encoder", default=None,
                    help="minilm (default), mpnet or an HF directory")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--skip-epochs", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: this benchmark needs a GPU (see the device notes in DEVELOPERS.md)")
    pretrained = resolve(args.encoder)
    data = Path(args.data_dir) if args.data_dir else data_dir()
    encoder_throughput(pretrained, data, args.rounds)
    if not args.skip_epochs:
        epoch_times(pretrained, data)


if __name__ == "__main__":
    main()
