"""Optional torch.compile of the encoder, falling back cleanly where it cannot work."""

from __future__ import annotations

import torch


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
