"""Time MultitaskStep (the training step itself) in fp32 and bf16 on CUDA, with and without cuDNN's SDPA.

    python benchmarks/gpu_session/step_profile.py ENCODER_DIR DATA_DIR [--allow-cudnn] [--profile]

How the cuDNN attention's per-shape host cost was found: with it, bf16 steps spent most of their
host time in aten::_cudnn_attention_forward/backward (plan building for each new batch shape).
"""
import argparse
import time

import torch
from torch.nn.attention import SDPBackend

import bertmtl.model.bert as bert

from bertmtl.data.batching import RoundRobin
from bertmtl.model.heads import HeadConfig, MultitaskBert
from bertmtl.encoders.weights import load_encoder
from bertmtl.mtl.step import MultitaskStep
from bertmtl.encoders.tokenizer import EncoderTokenizer
from bertmtl.training.setup import TrainConfig, load_datasets

ap = argparse.ArgumentParser()
ap.add_argument("encoder")
ap.add_argument("data")
ap.add_argument("--allow-cudnn", action="store_true", help="let SDPA pick cuDNN's attention (the old behaviour)")
ap.add_argument("--profile", action="store_true")
args = ap.parse_args()
dev = torch.device("cuda")
if args.allow_cudnn:  # the encoder reads this list at every attention call
    bert._SDPA_BACKENDS = [SDPBackend.CUDNN_ATTENTION, *bert._SDPA_BACKENDS]
for prec in ("fp32", "bf16"):
    cfg = TrainConfig(data_dir=args.data, encoder=args.encoder, precision=prec, device="cuda")
    cfg.validate()
    tok = EncoderTokenizer.from_dir(args.encoder, max_length=cfg.max_length)
    train_sets, _, _ = load_datasets(cfg, tok, lambda row: None)
    torch.manual_seed(0)
    model = MultitaskBert(load_encoder(args.encoder), HeadConfig.of(cfg)).to(dev).train()
    step = MultitaskStep(model, cfg, list(train_sets), dev)
    rr = RoundRobin(train_sets, cfg.batch_size, cfg.seed)
    batches = [rr.next() for _ in range(12)]
    for b in batches[:4]:
        step.backward(b)
        step.apply(1e-5)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for b in batches[4:]:
        step.backward(b)
        step.apply(1e-5)
    torch.cuda.synchronize()
    print(f"{prec}: {(time.perf_counter() - t0) / 8 * 1000:.1f} ms/step", flush=True)
    if args.profile:
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=acts) as p:
            for b in batches[8:]:
                step.backward(b)
                step.apply(1e-5)
            torch.cuda.synchronize()
        print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=50))
