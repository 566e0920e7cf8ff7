"""Where and in what precision the model runs: device choice, the one autocast rule, compilation.

Training, evaluation, prediction, pretraining and augmentation all pick their device and
autocast dtype here, so the rule is stated once.
"""

from __future__ import annotations

import os

import torch

from ..errors import UserError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# BERTMTL_NATIVE_BF16=1 (or 0) overrides the CPU check below: the tests force both branches of
# `--precision auto` on any machine, and a user can see what the other branch would do.
NATIVE_BF16_ENV = "BERTMTL_NATIVE_BF16"


def pick_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; an explicit 'cuda' without a GPU is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        if torch.version.cuda is None:
            raise UserError(f"--device cuda was asked for, but this torch ({torch.__version__}) is a CPU-only build; "
                            f"install a CUDA build of torch (docs: Getting started) or use --device cpu")
        raise UserError("--device cuda was asked for, but no CUDA device is available (try --device cpu)")
    return dev


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 is
    emulated and slower than fp32. $BERTMTL_NATIVE_BF16 (1 or 0) overrides the answer."""
    forced = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def autocast_dtype(precision: str, device: torch.device, training: bool) -> torch.dtype | None:
    """The autocast dtype of model calls (None = fp32): the one rule for training and prediction.

    fp32, bf16 and fp16 (fp16 for training only, with a gradient scaler) are used as asked.
    "auto" is bf16 where the hardware multiplies bf16 natively, else fp32:
      - CPUs with AVX512-BF16 or AMX: bf16 for training steps and for prediction;
      - CUDA GPUs with bf16: bf16 for prediction, but fp32 for training steps: at the default
        batch sizes a step is bound by the host launching kernels, for MiniLM and for MPNet
        alike, so bf16's extra cast kernels cost more than its faster matmuls save (measured
        with benchmarks/gpu.py; docs/gpus.md).
    Dev evaluation is always fp32, whatever the training precision.
    """
    allowed = ("auto", *DTYPES) if training else ("auto", "fp32", "bf16")
    if precision not in allowed:
        raise ValueError(f"precision must be one of {', '.join(allowed)}, not {precision!r}")
    if precision != "auto":
        return DTYPES[precision]
    if device.type == "cuda":
        return torch.bfloat16 if not training and torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None


def precision_name(dtype: torch.dtype | None) -> str:
    """fp32 / bf16 / fp16, as the options and metrics.jsonl spell it."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def compile_encoder(model, message) -> bool:
    """torch.compile the transformer layer stack in place (state-dict keys unchanged); False on fallback."""
    stack = model.encoder.encoder
    try:
        stack.compile(dynamic=True)
        # Compilation is lazy: try it now on a tiny input rather than fail mid-run.
        dev = next(model.parameters()).device
        h = model.encoder.config.hidden_size
        with torch.no_grad():
            stack(torch.zeros(2, 8, h, device=dev), None)
        return True
    except Exception as e:  # noqa: BLE001 - any backend failure means "run eagerly"
        stack._compiled_call_impl = None
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        message(f"warning: --compile is not available here ({first}); training uncompiled")
        return False
