"""Cost of one multi-task training step: sum vs PCGrad vs PCGrad + SMART, bucketed vs not,
fp32 vs bf16 autocast (what `--precision auto` picks on CPUs that multiply bf16 natively);
with --combiners, every gradient combiner instead; with --weightings, every loss weighting;
with --families, the default step of each encoder family at its usual size, and an epoch's cost.

Every variant runs the training loop's own step (bertmtl.mtl.step.MultitaskStep) on the same
real batches (default weights, ../shared/data), alternating variants round by round; prints
the median seconds per step and ratios against `sum`. With --combiners it also times each
combiner's own work (the Gram matrix, its weights, the weighted sum) on encoder-sized gradients
for the three tasks and for 10, as a share of the sum step. With --weightings each loss
weighting's step on the plain sum and on PCGrad, against no weighting.

    python benchmarks/mtl_step.py [--rounds 6] [--batch-size 32] [--combiners | --weightings | --families]

--families builds each family's encoder at the size of its usual base checkpoint (bert-base-uncased,
roberta-base, google/electra-base-discriminator, distilbert-base-uncased, microsoft/deberta-v3-base,
all-mpnet-base-v2; all-MiniLM-L6-v2 for reference) with random weights (the cost does not depend on
them), and times the default training step (`bertmtl train`'s options, --batch-size given) on real
batches; an epoch's cost is that times the default epoch's steps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_dir, default_step, interleaved, matmul_gflops  # noqa: E402

from bertmtl.data.batching import RoundRobin  # noqa: E402
from bertmtl.model.device import cpu_has_native_bf16  # noqa: E402
from bertmtl.model.bert import BertModel  # noqa: E402
from bertmtl.model.heads import HeadConfig, MultitaskBert  # noqa: E402
from bertmtl.mtl.step import MultitaskStep  # noqa: E402
from bertmtl.encoders.tokenizer import EncoderTokenizer  # noqa: E402
from bertmtl.training.setup import load_datasets  # noqa: E402
from bertmtl.configuration.train_config import TrainConfig  # noqa: E402
from bertmtl.encoders.weights import pretrained_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--combiners", action="store_true", help="time every --combine method instead")
    ap.add_argument("--weightings", action="store_true", help="time every --loss-weighting instead")
    ap.add_argument("--families", action="store_true", help="time the default step of every encoder family")
    ap.add_argument("--efficiency", action="store_true", help="the default step's share of the matmul rate, our "
                                                               "AdamW against torch's, and a profile by operator")
    args = ap.parse_args()
    if args.families:
        return families(args)
    if args.efficiency:
        return efficiency(args)
    torch.manual_seed(0)
    # fp32 is the reference for every comparison but the last one.
    base = TrainConfig(data_dir=str(data_dir()), batch_size=args.batch_size, precision="fp32")
    tok = EncoderTokenizer.from_dir(pretrained_dir())
    train_sets, _, _ = load_datasets(base, tok, warn=lambda row: None)
    tasks = list(train_sets)
    model = MultitaskBert(BertModel.from_pretrained(pretrained_dir()), HeadConfig.of(base)).train()
    dev = torch.device("cpu")
    if args.combiners:
        return combiners(model, base, train_sets, tasks, dev, args)
    if args.weightings:
        return weightings(model, base, train_sets, tasks, dev, args)

    variants = {
        "sum": dict(combine="sum", smart=False),
        "pcgrad": dict(combine="pcgrad", smart=False),
        "pcgrad+smart": dict(combine="pcgrad", smart=True),
        "pcgrad, unbucketed": dict(combine="pcgrad", smart=False),
        "pcgrad, bf16": dict(combine="pcgrad", smart=False, precision="bf16"),
    }
    steppers = {}
    for name, kw in variants.items():
        cfg = TrainConfig(**{**base.to_dict(), **kw})
        steppers[name] = MultitaskStep(model, cfg, tasks, dev)
    # The same examples for every variant: draw batches once (bucketed and not) per round.
    bucketed = RoundRobin(train_sets, args.batch_size, seed=1)
    plain = RoundRobin(train_sets, args.batch_size, seed=1, bucket=False)
    rounds = [(bucketed.next(), plain.next()) for _ in range(args.rounds + 1)]
    it = {name: iter(rounds) for name in variants}
    tokens = {"bucketed": 0, "unbucketed": 0}

    def make(name):
        def run():
            b, u = next(it[name])
            batches = u if "unbucketed" in name else b
            if name in ("pcgrad", "pcgrad, unbucketed"):
                key = "unbucketed" if "unbucketed" in name else "bucketed"
                tokens[key] += sum(x.inputs.input_ids.numel() for x in batches.values())
            steppers[name].backward(batches)
            steppers[name].apply(1e-5)
        return run

    times = interleaved({n: make(n) for n in variants}, rounds=args.rounds, warmup=1)
    print(f"{args.batch_size} examples per task per step, 3 tasks, CPU threads {torch.get_num_threads()}; "
          f"median of {args.rounds} steps each, interleaved")
    print(f"{'variant':<22}{'s/step':>8}{'vs sum':>8}")
    for name, t in times.items():
        print(f"{name:<22}{t:>8.2f}{t / times['sum']:>8.2f}")
    print(f"PCGrad overhead over sum: {100 * (times['pcgrad'] / times['sum'] - 1):+.1f}% (target <= +15%)")
    print(f"padded tokens per step, bucketed vs unbucketed: {tokens['bucketed']} vs {tokens['unbucketed']}; "
          f"unbucketed/bucketed time {times['pcgrad, unbucketed'] / times['pcgrad']:.2f}x")
    print(f"bf16 autocast vs fp32 step: {times['pcgrad'] / times['pcgrad, bf16']:.2f}x faster "
          f"(native bf16 on this CPU: {cpu_has_native_bf16()}; --precision auto uses bf16 only then)")


def step_times(steppers: dict, train_sets, args) -> dict:
    """Median seconds per step of each stepper, on the same batches, interleaved round by round."""
    rr = RoundRobin(train_sets, args.batch_size, seed=1)
    rounds = [rr.next() for _ in range(args.rounds + 1)]
    it = {name: iter(rounds) for name in steppers}

    def make(name):
        def run():
            steppers[name].backward(next(it[name]))
            steppers[name].apply(1e-5)
        return run

    return interleaved({n: make(n) for n in steppers}, rounds=args.rounds, warmup=1)


def efficiency(args) -> None:
    """The default step (`bertmtl train`'s options, precision auto) against the matmul rate of its
    precision measured in the same run; our AdamW against torch's foreach and fused AdamW on the
    same parameters and gradients; and where the step's time goes, by operator."""
    from torch.utils.flop_counter import FlopCounterMode

    from bertmtl.model.device import autocast_dtype, precision_name
    from bertmtl.training.optim import AdamW, parameter_groups

    cfg, _, model, stepper, rr = default_step(args.batch_size)
    dtype = autocast_dtype(cfg.precision, torch.device("cpu"), training=True)
    batches = [rr.next() for _ in range(args.rounds + 2)]
    it = iter(batches)

    def step():
        stepper.backward(next(it))
        stepper.apply(1e-5)

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    t = interleaved({"step": step}, rounds=args.rounds, warmup=0)["step"]
    peak = matmul_gflops(dtype=dtype or torch.float32)
    rate = flops / t / 1e9
    print(f"default step (combine {cfg.combine}, precision {precision_name(dtype)}), {args.batch_size} examples per "
          f"task, 3 tasks, CPU threads {torch.get_num_threads()}: {flops / 1e12:.3f} TFLOP in {t:.2f} s = {rate:.0f} "
          f"GFLOP/s; a {precision_name(dtype)} 2048x2048 matmul runs at {peak:.0f} GFLOP/s here: "
          f"{100 * rate / peak:.0f}% of it (median of {args.rounds} steps)")

    # Optimizers on the model's own parameter groups, with gradients of the right shapes.
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    groups = parameter_groups(model, cfg.weight_decay)
    optimizers = {"ours (foreach)": AdamW(groups, lr=1e-5),
                  "torch foreach": torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=1e-5, foreach=True)}
    try:
        optimizers["torch fused"] = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=1e-5, fused=True)
    except (RuntimeError, ValueError) as e:  # fused AdamW on the CPU needs a recent torch
        print(f"torch fused AdamW unavailable: {e}")
    times = interleaved({k: o.step for k, o in optimizers.items()}, rounds=max(5, args.rounds), warmup=2)
    n = sum(p.numel() for p in params) / 1e6
    print(f"AdamW step over {n:.1f}M parameters: " + ", ".join(
        f"{k} {1e3 * v:.1f} ms ({100 * v / t:.1f}% of the step)" for k, v in times.items()))

    from torch.profiler import ProfilerActivity, profile

    it = iter(batches[:2])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
        step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    print(f"profile of 2 steps (self CPU time): matmuls {100 * matmul / total:.0f}%; the largest operators:")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:14]:
        print(f"  {e.key:<40}{100 * e.self_cpu_time_total / total:>6.1f}%")


MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm",
              "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::mkldnn_linear"}


def weightings(model, base, train_sets, tasks, dev, args) -> None:
    """Each loss weighting's full step on sum and on PCGrad, against none on the same combiner."""
    from bertmtl.mtl.weightings import REGISTRY

    steppers = {(c, w): MultitaskStep(model, TrainConfig(**{**base.to_dict(), "combine": c, "loss_weighting": w,
                                                            "smart": False}), tasks, dev, steps_per_epoch=2)
                for c in ("sum", "pcgrad") for w in REGISTRY}
    times = step_times(steppers, train_sets, args)
    print(f"{args.batch_size} examples per task per step, 3 tasks, fp32, CPU threads {torch.get_num_threads()}; "
          f"median of {args.rounds} steps each, interleaved")
    print(f"{'combiner':<10}{'weighting':<13}{'s/step':>8}{'vs none':>9}")
    for (c, w), t in times.items():
        print(f"{c:<10}{w:<13}{t:>8.2f}{t / times[(c, 'none')]:>9.2f}")


def combiners(model, base, train_sets, tasks, dev, args) -> None:
    """Each combiner's full step against sum's, then its own cost at 3 and 10 tasks."""
    from bertmtl.mtl.combiners import REGISTRY, combine_into, gram_matrix, make_combiner

    steppers = {name: MultitaskStep(model, TrainConfig(**{**base.to_dict(), "combine": name, "smart": False}), tasks,
                                    dev) for name in REGISTRY}
    times = step_times(steppers, train_sets, args)
    params = sum(p.numel() for p in steppers["sum"].shared)
    gen = torch.Generator().manual_seed(0)
    own = {}
    for t in (3, 10):  # encoder-sized gradients: what the Gram matrix and the weighted sum pass over
        grads = [torch.randn(params, generator=gen) for _ in range(t)]
        names = [f"t{i}" for i in range(t)]
        out = torch.empty(params)

        def combine(c):
            def run():
                gram = gram_matrix(grads)
                combine_into(out, grads, c(gram, names))
            return run

        cs = {n: make_combiner(TrainConfig(combine=n), seed=1) for n in REGISTRY}
        own[t] = interleaved({n: combine(c) for n, c in cs.items()}, rounds=max(3, args.rounds), warmup=1)
        # The weights alone (the Gram matrix given), which is what grows with T.
        gram = gram_matrix(grads)
        own[f"w{t}"] = interleaved({n: (lambda c=c: c(gram, names)) for n, c in cs.items()},
                                   rounds=max(3, args.rounds), inner=20, warmup=2)
    print(f"{args.batch_size} examples per task per step, 3 tasks, fp32, CPU threads {torch.get_num_threads()}; "
          f"median of {args.rounds} steps each, interleaved; combiner cost on {params / 1e6:.1f}M-parameter "
          f"gradients (Gram matrix + weights + weighted sum; weights alone)")
    print(f"{'combiner':<13}{'s/step':>8}{'vs sum':>8}{'own ms, 3 tasks':>17}{'% of step':>10}"
          f"{'own ms, 10 tasks':>18}{'weights ms 3 / 10':>19}")
    for name, t in times.items():
        print(f"{name:<13}{t:>8.2f}{t / times['sum']:>8.2f}{1000 * own[3][name]:>17.1f}"
              f"{100 * own[3][name] / times['sum']:>9.1f}%{1000 * own[10][name]:>18.1f}"
              f"{1000 * own['w3'][name]:>10.3f} / {1000 * own['w10'][name]:.3f}")


# The usual base checkpoint of each family: its config.json's size fields (the public configs).
FAMILY_SIZES = {
    "bert-base-uncased": {"model_type": "bert"},
    "roberta-base": {"model_type": "roberta", "vocab_size": 50265, "max_position_embeddings": 514,
                     "type_vocab_size": 1, "pad_token_id": 1, "layer_norm_eps": 1e-5},
    # ElectraConfig's own defaults are the small model's (hidden 256): the base size spelled out.
    "electra-base-discriminator": {"model_type": "electra", "embedding_size": 768, "hidden_size": 768,
                                   "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "distilbert-base-uncased": {"model_type": "distilbert", "n_layers": 6, "dim": 768, "n_heads": 12,
                                "hidden_dim": 3072},
    "deberta-v3-base": {"model_type": "deberta-v2", "vocab_size": 128100, "type_vocab_size": 0,
                        "relative_attention": True, "position_buckets": 256, "pos_att_type": "p2c|c2p",
                        "share_att_key": True, "norm_rel_ebd": "layer_norm", "position_biased_input": False,
                        "layer_norm_eps": 1e-7, "max_relative_positions": -1},
    "all-mpnet-base-v2": {"model_type": "mpnet", "vocab_size": 30527, "max_position_embeddings": 514,
                          "pad_token_id": 1, "layer_norm_eps": 1e-5},
    "all-MiniLM-L6-v2 (default)": {"model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6,
                                   "intermediate_size": 1536},
}


def families(args) -> None:
    """The default training step (precision auto, the default combiner) of each family's base size."""
    from bertmtl.model.device import autocast_dtype, precision_name
    from bertmtl.encoders.config import BertConfig

    cfg = TrainConfig(data_dir=str(data_dir()), batch_size=args.batch_size)
    tok = EncoderTokenizer.from_dir(pretrained_dir())  # MiniLM's ids: inside every family's vocabulary
    train_sets, _, _ = load_datasets(cfg, tok, warn=lambda row: None)
    steps = RoundRobin(train_sets, args.batch_size, seed=1).steps_per_epoch()
    dev = torch.device("cpu")
    print(f"default step (combine {cfg.combine}, SMART {'on' if cfg.smart else 'off'}, precision "
          f"{precision_name(autocast_dtype(cfg.precision, dev, training=True))}), {args.batch_size} examples per task, 3 tasks, "
          f"CPU threads {torch.get_num_threads()}; an epoch = {steps} steps; median of {args.rounds} steps")
    print(f"{'encoder (random weights)':<30}{'params':>8}{'s/step':>8}{'min/epoch':>10}")
    for name, fields in FAMILY_SIZES.items():
        torch.manual_seed(0)
        model = MultitaskBert(BertModel(BertConfig.from_dict(fields)), HeadConfig.of(cfg)).train()
        stepper = MultitaskStep(model, cfg, list(train_sets), dev, steps_per_epoch=steps)
        t = step_times({name: stepper}, train_sets, args)[name]
        params = sum(p.numel() for p in model.encoder.parameters()) / 1e6
        print(f"{name:<30}{params:>7.0f}M{t:>8.2f}{t * steps / 60:>10.1f}")


if __name__ == "__main__":
    main()
