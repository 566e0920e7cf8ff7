"""Prediction throughput: the ONNX export under ONNX Runtime vs our Predictor, same process, same pairs.

Both sides answer the same real Quora pairs as `bertmtl predict -` does (minus reading stdin and
writing JSON): tokenise, batch by length (64 per batch), run encoder and heads, and build the
answer objects with the output kinds. Timings alternate between the two (median of --rounds), so
machine noise hits both alike; on a shared machine the absolute figures wander, the ratio less.

    python benchmarks/onnx_predict.py [--checkpoint DIR] [--pairs 2000] [--rounds 3] [--threads 1]

Without --checkpoint, a checkpoint of the default weights with fresh heads is written to a
temporary directory (prediction cost does not depend on training). Needs onnxruntime, onnx and
onnxscript (pip install 'bertmtl[onnx]' onnxruntime).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_dir, interleaved  # noqa: E402
from predict import make_checkpoint  # noqa: E402


def quora_pairs(n: int) -> list[tuple[str, str]]:
    with open(data_dir() / "quora-dev.csv", newline="", encoding="utf-8") as f:
        rows = [(r["sentence1"], r["sentence2"]) for r in csv.DictReader(f, delimiter="\t")
                if r["sentence1"] and r["sentence2"]]
    return rows[:n]


def onnx_answers(session, predictor, pairs: list[tuple[str, str]], batch_size: int = 64) -> list[dict]:
    """`predict`'s answers for `pairs`, computed by the ONNX graph."""
    import torch

    from bertmtl.inference.evaluate import decisions

    tok, specs = predictor.tokenizer, list(predictor.model.specs.values())
    enc_a = tok.encode([a for a, _ in pairs])
    enc_b = tok.encode([b for _, b in pairs])
    order = sorted(range(len(pairs)), key=lambda i: max(len(enc_a[i].ids), len(enc_b[i].ids)))
    out: list[dict | None] = [None] * len(pairs)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        a, b = tok.pad([enc_a[i] for i in idx]), tok.pad([enc_b[i] for i in idx])
        res = session.run(None, {"input_ids_1": a.input_ids.numpy(), "attention_mask_1": a.attention_mask.numpy(),
                                 "input_ids_2": b.input_ids.numpy(), "attention_mask_2": b.attention_mask.numpy()})
        got = {o.name: torch.from_numpy(r) for o, r in zip(session.get_outputs(), res)}
        for row, i in enumerate(idx):
            ans = {}
            for spec in specs:
                keys = [spec.json_keys[0]] if spec.pair else [spec.json_keys[0] + "1", spec.json_keys[0] + "2"]
                for k, suffix in zip(keys, [""] if spec.pair else ["1", "2"]):
                    o = got[k][row]
                    ans.update(spec.output.answer(spec, o, decisions(spec, o), suffix))
            out[i] = ans
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "auto"),
                    help="our Predictor's precision (ONNX Runtime runs the fp32 graph)")
    args = ap.parse_args()
    import onnxruntime as ort
    import torch

    from bertmtl.inference.export import export
    from bertmtl.inference.predict import Item, Predictor

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bertmtl-onnx-bench-"))
    ckpt = args.checkpoint or str(make_checkpoint(tmp / "ckpt"))
    export(ckpt, "onnx", tmp / "onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = args.threads
    session = ort.InferenceSession(str(tmp / "onnx" / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    predictor = Predictor(ckpt, precision=args.precision)
    pairs = quora_pairs(args.pairs)
    items = [Item(i + 1, a, b) for i, (a, b) in enumerate(pairs)]

    ours = list(predictor.stream(items))
    theirs = onnx_answers(session, predictor, pairs)
    diff = max(abs(x["paraphrase_prob"] - y["paraphrase_prob"]) for x, y in zip(ours, theirs))
    same = sum(x["sentiment1"]["index"] == y["sentiment1"]["index"] for x, y in zip(ours, theirs))
    t = interleaved({"ours": lambda: list(predictor.stream(items)),
                     "onnx": lambda: onnx_answers(session, predictor, pairs)}, rounds=args.rounds)
    n = len(pairs)
    print(f"{n} Quora dev pairs, {args.threads} thread(s), batches of 64, median of {args.rounds} alternating rounds")
    print(f"ours (bertmtl Predictor, torch {torch.__version__}, {predictor.autocast_dtype or 'fp32'}): "
          f"{n / t['ours']:.0f} pairs/s")
    print(f"ONNX Runtime {ort.__version__} (fp32 graph from `bertmtl export --format onnx`): "
          f"{n / t['onnx']:.0f} pairs/s")
    print(f"ratio ONNX Runtime / ours: {t['ours'] / t['onnx']:.2f}x; agreement: paraphrase_prob max |diff| "
          f"{diff:.1e}, same sentiment class {same}/{n}")


if __name__ == "__main__":
    main()
