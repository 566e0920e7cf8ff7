"""How many CPU threads torch runs on, and how they wait: what keeps bertmtl fast when the CPU
is also doing other work. The one owner of the thread settings: train, pretrain, evaluate and
predict ask `use_threads`; the command's entry point asks `configure_threads`.

PyTorch's CPU kernels run on an OpenMP thread team, one thread per core. By default GNU OpenMP's
threads spin at a barrier (300,000 turns) before they sleep. When another process keeps one of
those cores busy, each parallel region waits for the thread whose core is taken, and the spinning
threads take CPU time from the very process that holds them up. Measured with
`python benchmarks/contention.py` on a 2-core AMD EPYC, beside one busy-looping process, the
default step took 9.75 s against 3.13 s quiet: 1.55x the one-thread step (6.29 s). With passive
waiting (waiting threads sleep at once), the loaded step took 6.61 s, 1.05x the one-thread step,
and the quiet step took 3.30 s (1.05x spinning's; 0.93x in an earlier run of the same benchmark).

Set once by the command-line entry point (`bertmtl ...`, `python -m bertmtl`, torchrun), before
torch loads (OpenMP reads it when the library initialises). A value people set themselves
(OMP_WAIT_POLICY=ACTIVE) is kept. Importing bertmtl as a library leaves the host process alone:
set it there before importing torch. The setting changes how threads wait, never a computed value.

The thread count is torch's own choice (a thread per core, or $OMP_NUM_THREADS / $MKL_NUM_THREADS
where people set them) unless `--threads N` says otherwise. Passive waiting is what makes the
default hold up under load, so the count does not adapt: beside one busy process one thread was
5% faster (6.29 s against 6.61 s), beside ten two passive threads were 28% faster (21.0 s against
29.2 s; `python benchmarks/contention.py --rounds 2 --steps 2 --competitors 10`).
"""

from __future__ import annotations

import os

WAIT_POLICY = "OMP_WAIT_POLICY"


def configure_threads() -> str:
    """Passive OpenMP waiting for this process and its children, unless set already; the policy in force."""
    return os.environ.setdefault(WAIT_POLICY, "PASSIVE")


def use_threads(n: int | None) -> int:
    """Run torch's CPU kernels on `n` threads (the --threads option; None keeps torch's choice,
    which follows $OMP_NUM_THREADS); the count in force."""
    import torch

    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()
