"""Encoder speed: ours vs transformers (the family's class, eager and sdpa), same weights, same batches.

Prints sentences/s for training steps (train mode, dropout on, forward + backward) and for
inference, the ratio ours/HF, and our achieved GFLOP/s as a fraction of a 2048x2048 fp32
matmul timed in the same run.

    python benchmarks/encoder.py [--encoder minilm|mpnet|DIR] [--rounds 7] [--device cpu]
    python benchmarks/encoder.py --family roberta|xlm-roberta|electra|distilbert|deberta-v2|all

The transformers class is the encoder family's (config.json's model_type); an attention
implementation that class does not offer is left out. `--family` times a randomly initialised
model of that family at MiniLM's size (6 layers, hidden 384, 12 heads; the same for every
family, so rows compare), built and saved by transformers, on token ids of real SST sentences.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_dir, encoder_flops, interleaved, matmul_gflops  # noqa: E402

from bertmtl.model import BertModel  # noqa: E402
from bertmtl.encoders.tokenizer import EncoderTokenizer  # noqa: E402
from bertmtl.encoders.weights import resolve  # noqa: E402


def sst_sentences() -> list[str]:
    with open(data_dir() / "ids-sst-train.csv", newline="", encoding="utf-8") as f:
        return [r["sentence"].strip() for r in csv.DictReader(f, delimiter="\t")]


# Each family's transformers config at one size (MiniLM-L6's), and how a family's config names it.
SIZE = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, vocab_size=30522)
FAMILY_CONFIGS = {
    "roberta": ("RobertaConfig", dict(max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)),
    "xlm-roberta": ("XLMRobertaConfig", dict(max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)),
    "electra": ("ElectraConfig", dict(embedding_size=128)),
    "distilbert": ("DistilBertConfig", dict(dim=384, n_layers=6, n_heads=12, hidden_dim=1536, vocab_size=30522)),
    "deberta-v2": ("DebertaV2Config", dict(relative_attention=True, position_buckets=256, pos_att_type="p2c|c2p",
                                           share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
                                           type_vocab_size=0, layer_norm_eps=1e-7)),
}


def family_dir(family: str, root: Path) -> Path:
    """A randomly initialised model of `family` saved by transformers (config.json, model.safetensors)."""
    import transformers

    name, extra = FAMILY_CONFIGS[family]
    config = getattr(transformers, name)(**({} if family == "distilbert" else SIZE), **extra)
    torch.manual_seed(0)
    d = root / family
    transformers.AutoModel.from_config(config).save_pretrained(str(d))
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--encoder", default=None, help="minilm (default), mpnet or an HF encoder directory")
    ap.add_argument("--family", choices=[*FAMILY_CONFIGS, "all"], default=None,
                    help="time a random model of this family (or every family) at MiniLM's size instead")
    args = ap.parse_args()
    if args.family is None:
        bench(resolve(args.encoder), args, resolve(args.encoder))
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILY_CONFIGS if args.family == "all" else [args.family]:
            bench(family_dir(family, Path(tmp)), args, resolve(None))


def bench(d: Path, args, text_dir: Path) -> None:
    """Time ours vs transformers on encoder directory `d`; sentences tokenised by `text_dir`'s tokenizer
    (a random family model has none: MiniLM's ids, which every family's vocabulary size holds)."""
    import transformers

    torch.manual_seed(0)
    dev = torch.device(args.device)
    ours = BertModel.from_pretrained(d).to(dev)
    hf_class = getattr(transformers, ours.config.family.architecture)
    hf = {}
    for impl in ("eager", "sdpa"):
        try:
            hf[impl] = hf_class.from_pretrained(str(d), attn_implementation=impl).to(dev)
        except (ValueError, ImportError) as e:  # e.g. a model class without SDPA support
            print(f"{hf_class.__name__} with {impl} attention: not available ({str(e).splitlines()[0]})")
    tok = EncoderTokenizer.from_dir(text_dir)

    rng = random.Random(0)
    sents = sst_sentences()
    fixed = tok.pad([e for e in tok.encode(rng.sample(sents, args.batch * 4))])  # cut to 32 tokens below
    fixed_batch = (fixed.input_ids[: args.batch, :32].clone(), torch.ones(args.batch, 32, dtype=torch.long))
    fixed_batch[0][:, -1] = tok.sep_id
    mix = tok(rng.sample(sents, args.batch))  # realistic: random SST sentences padded to the longest
    shapes = {f"{args.batch}x32": fixed_batch, f"mix (max {mix.input_ids.shape[1]} tok, "
              f"{mix.attention_mask.float().mean():.0%} real)": (mix.input_ids, mix.attention_mask)}

    if ours.config.family.padding_positions:  # ids 0..2 are special there; MiniLM's pad id 0 becomes <pad>
        pad = ours.config.pad_token_id
        shapes = {k: (torch.where(m.bool(), ids.clamp(min=pad + 2), torch.full_like(ids, pad)), m)
                  for k, (ids, m) in shapes.items()}
    mm = matmul_gflops(device=args.device)
    print(f"\nencoder {d.name} ({ours.config.model_type}, {sum(p.numel() for p in ours.parameters()) / 1e6:.0f}M "
          f"parameters) vs transformers.{hf_class.__name__}")
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"2048^2 fp32 matmul: {mm:.1f} GFLOP/s")
    cols = ("ours", "ours-unpad", *(f"HF-{impl}" for impl in hf))
    ratios = [f"ours/{impl}" for impl in hf]
    print(f"{'batch':<32}{'mode':<6}" + "".join(f"{c:>11}" for c in cols)
          + "".join(f"{r:>11}" for r in ratios) + f"{'unpad/best':>11}{'GF/s':>7}{'of mm':>6}")
    for label, (ids, mask) in shapes.items():
        ids, mask = ids.to(dev), mask.to(dev)
        b, t = ids.shape

        def call(m, hf_model, unpad):
            return m(input_ids=ids, attention_mask=mask) if hf_model else m(ids, mask, unpad=unpad)

        def train_step(m, hf_model=False, unpad=False):
            def run():
                out = call(m, hf_model, unpad)
                pooled = getattr(out, "pooler_output", None)  # families without a pooler have none
                (out.last_hidden_state.float().mean() + (pooled.float().mean() if pooled is not None else 0)).backward()
                m.zero_grad(set_to_none=True)
            return run

        def infer(m, hf_model=False, unpad=False):
            def run():
                with torch.inference_mode():
                    call(m, hf_model, unpad)
            return run

        for mode, make in (("train", train_step), ("infer", infer)):
            for m in (ours, *hf.values()):
                m.train(mode == "train")
            times = interleaved({"ours": make(ours), "ours-unpad": make(ours, unpad=True),
                                 **{f"HF-{impl}": make(m, True) for impl, m in hf.items()}},
                                rounds=args.rounds, warmup=2, device=args.device)
            rate = {k: b / v for k, v in times.items()}
            # Useful work only: FLOPs of the real tokens, so padding skipped is not counted as speed.
            flops = encoder_flops(ours.config, b, t, tokens=int(mask.sum())) * (3 if mode == "train" else 1)
            gf = flops / times["ours-unpad"] / 1e9
            best_hf = max(rate[f"HF-{impl}"] for impl in hf)
            print(f"{label:<32}{mode:<6}" + "".join(f"{rate[c]:>11.1f}" for c in cols)
                  + "".join(f"{rate['ours'] / rate[f'HF-{impl}']:>11.3f}" for impl in hf)
                  + f"{rate['ours-unpad'] / best_hf:>11.3f}{gf:>7.0f}{gf / mm:>6.0%}")
    print("sentences/s; ratios > 1 mean ours is faster. ours = the HF-identical padded path;\n"
          "ours-unpad = what bertmtl train/predict run (dense layers skip padding tokens);\n"
          "GF/s = useful (real-token) FLOP rate of ours-unpad, 'of mm' = as a fraction of the matmul.")


if __name__ == "__main__":
    main()
