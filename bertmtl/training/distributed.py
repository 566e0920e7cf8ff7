"""torch.distributed plumbing for torchrun: process group, collectives, rank-0-only side effects.

`torchrun --nproc_per_node N -m bertmtl train ...` sets RANK / WORLD_SIZE / LOCAL_RANK; the
training loop then reduces each task's flat gradient across ranks (NCCL on CUDA, gloo on CPU).
Objects are exchanged as JSON bytes, never pickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    enabled: bool = False

    @classmethod
    def from_env(cls) -> "Dist":
        """Join the process group torchrun describes in the environment (single process if none)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as td

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if not td.is_initialized():
            use_nccl = torch.cuda.is_available() and os.environ.get("BERTMTL_DIST_BACKEND", "") != "gloo"
            if use_nccl:
                torch.cuda.set_device(local)
            td.init_process_group(backend="nccl" if use_nccl else "gloo")
        return cls(rank=td.get_rank(), world=td.get_world_size(), local_rank=local, enabled=True)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        if name in ("auto", "cuda") and torch.cuda.is_available() and torch.distributed.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        if name == "cuda":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def all_reduce_mean(self, t: torch.Tensor) -> None:
        """Average a tensor across ranks in place."""
        if self.enabled:
            torch.distributed.all_reduce(t)
            t.div_(self.world)

    def _reduce_flag(self, flag: bool, op) -> bool:
        if not self.enabled:
            return flag
        t = torch.tensor([1 if flag else 0], device=self._comm_device())
        torch.distributed.all_reduce(t, op=op)
        return bool(t.item())

    def all_true(self, flag: bool) -> bool:
        return self._reduce_flag(flag, torch.distributed.ReduceOp.MIN if self.enabled else None)

    def any_true(self, flag: bool) -> bool:
        return self._reduce_flag(flag, torch.distributed.ReduceOp.MAX if self.enabled else None)

    def _comm_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if torch.distributed.get_backend() == "nccl" else torch.device("cpu")

    def broadcast_object(self, obj):
        """Rank 0's JSON-able object on every rank (sent as UTF-8 JSON bytes)."""
        if not self.enabled:
            return obj
        dev = self._comm_device()
        data = json.dumps(obj, default=str).encode() if self.is_main else b""
        size = torch.tensor([len(data)], device=dev)
        torch.distributed.broadcast(size, 0)
        buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=dev)
        if self.is_main:
            buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        torch.distributed.broadcast(buf, 0)
        out = json.loads(bytes(buf.cpu().tolist()).decode())
        return out

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            # Wait for rank 0's last writes first: a gloo rank that tears its group down while a
            # peer still holds the connection can abort the process ("terminate called without
            # an active exception"), and torchrun then reports a finished run as failed.
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
