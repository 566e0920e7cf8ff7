"""Serving speed: `bertmtl serve` under load against `bertmtl predict -` on the same items.

One item per request (a Quora dev pair, as a service is called), sent by C keep-alive
connections from this process, each sending its next request once its answer is in (C = 1, 8,
64 concurrent clients),
against a real server on loopback: batched (the defaults: up to 64 items a pass, 5 ms wait) and
unbatched (`--max-batch 1`, one request per pass). Each run is bounded in requests (--requests)
and seconds (--seconds). The ceiling is `predict -` piping the same pairs: its items/s without
process start-up (the time of a one-line run subtracted). Variants alternate per round on the
same machine; the table gives the median round, and the ratios are computed within each round.

    python benchmarks/serve.py [--checkpoint DIR] [--requests 1000] [--seconds 60] [--rounds 2]

The model alone (the Predictor in this process, no HTTP) answering in passes of 1, 32 and 64
pairs says what batching can be worth on the machine at all: the server's model thread does
that work, and the HTTP side is what it adds.

Without --checkpoint, a checkpoint of the default weights with fresh heads is written to a
temporary directory (serving cost does not depend on training).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_dir  # noqa: E402
from predict import make_checkpoint, timed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def start(ckpt: str, *args) -> tuple[subprocess.Popen, str]:
    """`bertmtl serve CKPT ARGS --port 0`: the process and its address once it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "bertmtl", "serve", ckpt, "--port", "0", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    for line in proc.stderr:
        if m := re.search(r"serving on (http://\S+)", line):
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
            return proc, m.group(1)
    raise SystemExit(f"bertmtl serve did not start (exit {proc.wait()})")


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the answer: the load generator.

    Hand-written rather than httpx because the client shares the machine with the server: on the
    2-core EPYC, httpx spent about 11 ms of CPU per request (6.9 s for 600 requests at 64 clients,
    half a core), CPU the server then lacks; this client spends a small fraction of that."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def load(url: str, pairs: list, clients: int, requests: int, seconds: float) -> dict:
    """`clients` connections each sending one pair per request, the next once the answer is in,
    until `requests` are sent or `seconds` pass."""
    latencies: list[float] = []
    sent = 0
    stop_at = time.perf_counter() + seconds
    bodies = [json.dumps([list(p)]).encode() for p in pairs]

    async def client() -> None:
        nonlocal sent
        conn = Connection(url)
        try:
            await conn.post("/predict", bodies[0])  # connected and warm
            while sent < requests and time.perf_counter() < stop_at:
                k = sent
                sent += 1
                t0 = time.perf_counter()
                status, answer = await conn.post("/predict", bodies[k % len(bodies)])
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    raise SystemExit(f"status {status}: {answer[:300]!r}")
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(clients)])
    wall = time.perf_counter() - t0
    latencies.sort()
    return {"requests": len(latencies), "rps": len(latencies) / wall, "items_per_s": len(latencies) / wall,
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def model_rate(predictor, pairs: list, size: int) -> float:
    """The Predictor alone, in this process (no HTTP, no queue): pairs/s answered in passes of `size`
    pairs, what the server's model thread does with a batch of that many (at most 200 pairs for 1)."""
    from bertmtl.inference.protocol import Item

    items = [Item(i + 1, a, b) for i, (a, b) in enumerate(pairs[: 200 if size == 1 else len(pairs)])]
    t0 = time.perf_counter()
    for s in range(0, len(items), size):
        list(predictor.answers(items[s:s + size]))
    return len(items) / (time.perf_counter() - t0)


def stdin_rate(ckpt: str, pairs: list) -> float:
    """`predict -`'s pairs/s on `pairs`, without process start-up (a one-line run's time subtracted)."""
    cmd = [sys.executable, "-m", "bertmtl", "predict", "--checkpoint", ckpt, "-"]
    lines = "".join(f"{a}\t{b}\n" for a, b in pairs).encode()
    empty = timed(cmd, stdin=lines.split(b"\n", 1)[0] + b"\n")
    full = timed(cmd, stdin=lines)
    return (len(pairs) - 1) / (full - empty)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--requests", type=int, default=1000, help="requests per run (each one pair)")
    ap.add_argument("--seconds", type=float, default=60, help="at most this long per run")
    ap.add_argument("--rounds", type=int, default=2, help="rounds, each running every variant in turn")
    ap.add_argument("--clients", default="1,8,64")
    args = ap.parse_args()
    import torch

    ckpt = args.checkpoint or str(make_checkpoint(Path(tempfile.mkdtemp(prefix="bertmtl-serve-bench-")) / "ckpt"))
    with open(data_dir() / "quora-dev.csv", newline="", encoding="utf-8") as f:
        pairs = [(" ".join(r["sentence1"].split()), " ".join(r["sentence2"].split()))
                 for r in csv.DictReader(f, delimiter="\t") if r["sentence1"].strip() and r["sentence2"].strip()]
    pairs = pairs[: args.requests]
    levels = [int(c) for c in args.clients.split(",")]
    from bertmtl import Predictor

    predictor = Predictor(ckpt)
    servers = {"batched": start(ckpt), "unbatched": start(ckpt, "--max-batch", "1")}
    rows: dict = {}
    ratios: dict = {"ceiling": [], "unbatched": []}
    try:
        for rnd in range(args.rounds):
            ceiling = stdin_rate(ckpt, pairs)
            rows.setdefault(("predict -", "-"), []).append({"items_per_s": ceiling})
            alone = {size: model_rate(predictor, pairs, size) for size in (1, 32, 64)}
            for size, rate in alone.items():
                rows.setdefault(("model alone", size), []).append({"items_per_s": rate})
            print(f"round {rnd + 1}: predict - {ceiling:.0f} pairs/s; the model alone in passes of 1, 32, 64 pairs: "
                  + ", ".join(f"{r:.0f}" for r in alone.values()) + " pairs/s", flush=True)
            for clients in levels:
                for name, (_, url) in servers.items():
                    r = asyncio.run(load(url, pairs, clients, args.requests, args.seconds))
                    rows.setdefault((name, clients), []).append(r)
                    print(f"  {name:9s} {clients:3d} clients: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.1f} ms, "
                          f"p99 {r['p99_ms']:.1f} ms ({r['requests']} requests)", flush=True)
                if clients == max(levels):
                    b, u = rows[("batched", clients)][-1], rows[("unbatched", clients)][-1]
                    ratios["ceiling"].append(b["items_per_s"] / ceiling)
                    ratios["unbatched"].append(b["items_per_s"] / u["items_per_s"])
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(60)

    def med(key, field):
        return statistics.median(r[field] for r in rows[key])

    print()
    print("| variant | clients | requests/s | items/s | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| `predict -` (ceiling) | - | - | {med(('predict -', '-'), 'items_per_s'):.0f} | - | - |")
    for size in (1, 32, 64):
        print(f"| the model alone, passes of {size} | - | - | {med(('model alone', size), 'items_per_s'):.0f} | - | - |")
    for name in servers:
        for clients in levels:
            key = (name, clients)
            print(f"| {name} | {clients} | {med(key, 'rps'):.0f} | {med(key, 'items_per_s'):.0f} | "
                  f"{med(key, 'p50_ms'):.1f} | {med(key, 'p99_ms'):.1f} |")
    top = max(levels)
    print(f"\nat {top} clients, batched serving reaches {100 * statistics.median(ratios['ceiling']):.0f}% of "
          f"`predict -`'s items/s (target >= 80%) and {statistics.median(ratios['unbatched']):.1f}x the unbatched "
          f"server's (target >= 3x); per round: "
          + ", ".join(f"{100 * c:.0f}% / {u:.1f}x" for c, u in zip(ratios["ceiling"], ratios["unbatched"])))
    print(f"one pair per request, {len(pairs)} Quora dev pairs; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
