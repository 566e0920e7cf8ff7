"""Hardware-dependent speed-ups: bf16 where the CPU has it, optional torch.compile of the encoder."""

from __future__ import annotations

import torch


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX): then bf16 matmuls run
    ~3x faster than fp32 ones; elsewhere bf16 is emulated and slower."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def compile_encoder(model, message) -> bool:
    """Compile the transformer layer stack in place (state-dict keys unchanged); False on fallback."""
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
