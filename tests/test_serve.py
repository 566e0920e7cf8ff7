"""`bertmtl serve`: the real command in a child process, on loopback, talked to over HTTP by httpx
(no mocked transport): answers equal `bertmtl predict -` line for line, concurrent requests merge
into one pass (the metrics say so), every limit and hostile input gets its status and JSON error,
the token is asked for, --follow swaps in a new best checkpoint during a burst with no request
failed, and SIGTERM under load answers every accepted request, then exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .conftest import REAL_SENTENCES, command

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

REPO = Path(__file__).resolve().parents[1]
# Lines as `predict -` reads them: sentences, pairs, JSON objects with ids, and hostile ones.
LINES = [
    REAL_SENTENCES[0].encode(), f"{REAL_SENTENCES[1]}\t{REAL_SENTENCES[2]}".encode(),
    json.dumps({"sentence1": "how do i learn python", "sentence2": "what is python code", "id": "q-7"}).encode(),
    json.dumps({"sentence": "a fine film", "id": 12}).encode(), b"", b"bad \xff\xfe bytes",
    b'{"sentence": "\\ud800 lone"}', b'{"sentence": "x", "id": NaN}', b"a\tb\tc", b'{"sentence": 5}', b"[1, 2]",
    "caf\u00e9 \u2014 na\u00efve \U0001f600".encode(), b"the movie was good",
]


class Server:
    """`bertmtl serve ARGS --port 0` in a child process: its address once it listens, its stderr lines."""

    def __init__(self, *args, env=None):
        self.proc = subprocess.Popen([sys.executable, "-m", "bertmtl", "serve", *map(str, args), "--port", "0"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
                                          **(env or {})})
        self.lines: list[str] = []
        found = threading.Event()

        def read() -> None:
            for line in self.proc.stderr:
                self.lines.append(line.rstrip("\n"))
                if "serving on http://" in line:
                    found.set()
            found.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        found.wait(120)
        m = next((re.search(r"serving on (http://\S+)", x) for x in self.lines if "serving on" in x), None)
        assert m, "\n".join(self.lines)
        self.url = m.group(1)

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.reader.join(10)  # its last lines read
        return code


@pytest.fixture(scope="module")
def server(trained_run):
    # fp32 pinned: /encode is compared with an fp32 Predictor, whatever bf16 this CPU has natively
    s = Server(trained_run / "best", "--max-wait-ms", "200", "--max-batch", "64", "--precision", "fp32")
    yield s
    assert s.stop() == 0


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.slow
def test_answers_are_predict_stdins_byte_for_byte(server, trained_run):
    body = b"\n".join(LINES) + b"\n"
    cli = command("predict", "--checkpoint", trained_run / "best", "--precision", "fp32", "-", input=body)
    r = httpx.post(server.url + "/predict", content=body, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    assert r.content == cli.stdout and len(r.content.splitlines()) == len(LINES)
    assert r.headers["x-bertmtl-checkpoint"] == str(trained_run / "best")
    assert r.headers["x-bertmtl-step"] == str(json.loads((trained_run / "best" / "bertmtl.json").read_text())["step"])
    # JSON in: the same answers as JSON, one or a list (a pair is a two-item list).
    expected = [json.loads(x) for x in cli.stdout.splitlines()]
    items = [REAL_SENTENCES[0], [REAL_SENTENCES[1], REAL_SENTENCES[2]],
             {"sentence1": "how do i learn python", "sentence2": "what is python code", "id": "q-7"}]
    r = httpx.post(server.url + "/predict", json=items)
    assert r.status_code == 200 and r.json() == expected[:3]
    assert httpx.post(server.url + "/predict", json=REAL_SENTENCES[0]).json() == expected[0]
    # An item that cannot be answered is its own error object; the others are answered.
    r = httpx.post(server.url + "/predict", content=b'["", "ok", 7, {"sentence": "x", "id": NaN}]')
    assert [sorted(a) for a in r.json()] == [["error", "line"], ["sentiment"], ["error", "line"], ["error", "line"]]
    assert r.json()[3] == {"line": 4, "error": "id must be a finite number"}


@pytest.mark.slow
def test_encode_info_ready_health_metrics_and_the_schema(server, trained_run):
    import torch

    from bertmtl import Predictor

    p = Predictor(trained_run / "best", device="cpu", precision="fp32")
    r = httpx.post(server.url + "/encode", json=REAL_SENTENCES[:5])
    assert torch.allclose(torch.tensor(r.json()["embeddings"]), p.encode(REAL_SENTENCES[:5]), atol=1e-5)
    r = httpx.post(server.url + "/encode", json={"sentences": REAL_SENTENCES[0], "normalize": True})
    assert torch.allclose(torch.tensor(r.json()["embedding"]), p.encode(REAL_SENTENCES[0], normalize=True), atol=1e-5)
    info = httpx.get(server.url + "/info").json()
    assert info["checkpoint"] == str(trained_run / "best") and info["step"] == p.step
    assert [t["name"] for t in info["tasks"]] == ["sst", "para", "sts"] and info["dev"] == p.metrics
    assert info["encoder"]["layers"] == p.model.encoder.config.num_hidden_layers and info["follow"] is None
    assert httpx.get(server.url + "/ready").json()["ready"] is True
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    schema = httpx.get(server.url + "/openapi.json").json()
    assert {"/predict", "/encode", "/info", "/health", "/ready", "/metrics"} <= set(schema["paths"])
    text = httpx.get(server.url + "/metrics").text
    assert _metric(text, 'bertmtl_requests_total{code="200",route="encode"}') == 2


@pytest.mark.slow
def test_concurrent_requests_are_answered_in_one_pass(server):
    """16 one-sentence requests at once, each waiting up to 200 ms for others: far fewer passes than
    requests, and every request its own answer."""
    before = httpx.get(server.url + "/metrics").text

    async def burst():
        async with httpx.AsyncClient(timeout=60) as c:
            return await asyncio.gather(*[c.post(server.url + "/predict", json=f"{s} {i}")
                                          for i, s in enumerate(REAL_SENTENCES[:16])])

    answers = asyncio.run(burst())
    assert [r.status_code for r in answers] == [200] * 16 and all("sentiment" in r.json() for r in answers)
    after = httpx.get(server.url + "/metrics").text
    passes = _metric(after, "bertmtl_batch_items_count") - _metric(before, "bertmtl_batch_items_count")
    items = _metric(after, "bertmtl_batch_items_sum") - _metric(before, "bertmtl_batch_items_sum")
    assert items == 16 and passes <= 4, (passes, items)


@pytest.mark.slow
def test_every_limit_and_hostile_body_gets_its_status_and_a_json_error(trained_run):
    s = Server(trained_run / "best", "--max-body", 2000, "--max-items", 3, "--max-chars", 50, "--max-queue", 4,
               "--max-concurrent", 1, "--read-timeout", 2, env={"BERTMTL_SERVE_TOKEN": "s3cret"})
    try:
        auth = {"Authorization": "Bearer s3cret"}

        def post(path="/predict", **kw):
            return httpx.post(s.url + path, headers={**auth, **kw.pop("headers", {})}, timeout=60, **kw)

        cases = [
            (post(content=b"x" * 2001), 413, "max_body"),
            (post(json=["a", "b", "c", "d"]), 413, "max_items"),
            (post(json=["a" * 51]), 413, "max_chars"),
            (post("/encode", json=["a" * 51]), 413, "max_chars"),
            (post(content=b'{"sentence": '), 422, None),
            (post(content=b'"\xff\xfe"'), 422, None),
            (post(json=[]), 422, None),
            (post(content=b"[" * 1999), 422, None),
            (post("/encode", json=[3]), 422, None),
            (post("/encode", json={"sentences": ["a"], "normalise": True}), 422, None),
        ]
        for r, status, limit in cases:
            assert r.status_code == status, (r.status_code, r.text)
            body = r.json()
            assert body["error"] and body.get("limit") == limit
            if limit:
                assert body["max"] == {"max_body": 2000, "max_items": 3, "max_chars": 50}[limit]
        # Not a route, or not its method: the same JSON shape.
        assert post("/nope", json="a").status_code == 404 and post("/nope", json="a").json() == {"error": "Not Found"}
        assert httpx.get(s.url + "/predict", headers=auth).json() == {"error": "Method Not Allowed"}
        # The token: asked on every route but /health, the schema and its page included.
        for path in ("/predict", "/info", "/ready", "/metrics", "/encode", "/openapi.json", "/docs"):
            r = httpx.request("POST" if path in ("/predict", "/encode") else "GET", s.url + path, json=["a"])
            assert r.status_code == 401 and "token" in r.json()["error"] and r.headers["www-authenticate"] == "Bearer"
            r = httpx.request("POST" if path in ("/predict", "/encode") else "GET", s.url + path, json=["a"],
                              headers={"Authorization": "Bearer s3cret!"})
            assert r.status_code == 401
        assert httpx.get(s.url + "/health").status_code == 200
        # One request at a time: a second while the first still sends its body is told to come back.
        async def two():
            async def slow_body():
                yield b'["a", '
                await asyncio.sleep(1.5)
                yield b'"b"]'

            async with httpx.AsyncClient(timeout=60, headers=auth) as c:
                first = asyncio.create_task(c.post(s.url + "/predict", content=slow_body()))
                await asyncio.sleep(0.5)
                second = await c.post(s.url + "/predict", json=["c"])
                return await first, second

        first, second = asyncio.run(two())
        assert first.status_code == 200 and len(first.json()) == 2
        assert second.status_code == 429 and second.json()["limit"] == "max_concurrent"
        assert second.headers["retry-after"] == "1"

        # A body that stalls past --read-timeout gives its place back: 408, and the next request is served.
        async def stalled():
            async def never_done():
                yield b'["a", '
                await asyncio.sleep(6)
                yield b'"b"]'

            async with httpx.AsyncClient(timeout=60, headers=auth) as c:
                return await c.post(s.url + "/predict", content=never_done())

        r = asyncio.run(stalled())
        assert r.status_code == 408 and r.json() == {"error": "the body did not arrive within 2 s",
                                                      "limit": "read_timeout", "max": 2.0}
        assert post(json=["c"]).status_code == 200
        assert httpx.get(s.url + "/openapi.json", headers=auth).json()["info"]["title"] == "bertmtl"
        metrics = httpx.get(s.url + "/metrics", headers=auth).text
        assert _metric(metrics, 'bertmtl_request_errors_total{reason="max_concurrent",route="predict"}') == 1
        assert _metric(metrics, 'bertmtl_request_errors_total{reason="token",route="predict"}') == 2
    finally:
        assert s.stop() == 0


@pytest.mark.slow
def test_the_queue_limit_is_a_503(trained_run):
    s = Server(trained_run / "best", "--max-queue", 2)
    try:
        r = httpx.post(s.url + "/predict", json=["a", "b", "c"], timeout=60)
        assert r.status_code == 503 and r.json()["limit"] == "max_queue" and r.json()["max"] == 2
        assert httpx.post(s.url + "/predict", json=["a", "b"], timeout=60).status_code == 200
        # A client that hangs up halfway through its body is counted as such, not as a failure of ours.
        import socket

        host, port = s.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(b'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n["a')
            time.sleep(0.3)
        time.sleep(0.5)
        text = httpx.get(s.url + "/metrics").text
        assert _metric(text, 'bertmtl_request_errors_total{reason="disconnected",route="predict"}') == 1
        assert 'code="500"' not in text
    finally:
        assert s.stop() == 0


def test_a_public_address_needs_a_token(trained_run):
    r = command("serve", trained_run / "best", "--host", "0.0.0.0", "--port", "0", code=2, text=True,
                BERTMTL_SERVE_TOKEN="")
    assert "--host 0.0.0.0 listens beyond this machine: give --token (or set BERTMTL_SERVE_TOKEN)" in r.stderr
    r = command("serve", trained_run / "best", "--follow", trained_run, code=2, text=True)
    assert "name two models; give one" in r.stderr
    r = command("serve", trained_run / "best", "--token", "  ", "--port", "0", code=2, text=True)
    assert "--token must not be blank" in r.stderr
    r = command("serve", "--follow", trained_run / "best", "--port", "0", code=2, text=True)
    assert "is a checkpoint, which never changes: serve it as `bertmtl serve" in r.stderr


@pytest.mark.slow
def test_a_public_address_with_a_token_refuses_requests_without_it(trained_run):
    s = Server(trained_run / "best", "--host", "0.0.0.0", "--token", "t0k")
    try:
        url = s.url.replace("0.0.0.0", "127.0.0.1")
        assert httpx.post(url + "/predict", json="a").status_code == 401
        assert httpx.post(url + "/predict", json="a", headers={"Authorization": "Bearer t0k"}).status_code == 200
    finally:
        assert s.stop() == 0


def _swap_best(run: Path, source: Path, step: int) -> None:
    """Write `source` as run/best, as training does (built beside it, then swapped in), at `step`."""
    from bertmtl.fsutil import staged_dir

    with staged_dir(run / "best") as staging:
        for f in source.iterdir():
            if f.name != "bertmtl.json":
                shutil.copy2(f, staging / f.name)
        marker = json.loads((source / "bertmtl.json").read_text())
        (staging / "bertmtl.json").write_text(json.dumps({**marker, "step": step}))


@pytest.mark.slow
def test_follow_swaps_in_a_new_best_during_a_burst_without_failing_a_request(trained_run, tmp_path):
    run = tmp_path / "run"  # not there yet: training may start after the server
    s = Server("--follow", run, "--poll", 0.1)
    try:
        # No best/ yet: not ready, and a request is told so.
        assert httpx.get(s.url + "/ready").status_code == 503
        r = httpx.post(s.url + "/predict", json="a")
        assert r.status_code == 503 and "not written best/" in r.json()["error"]
        run.mkdir()
        _swap_best(run, trained_run / "best", 100)
        deadline = time.time() + 60
        while httpx.get(s.url + "/ready").status_code != 200:
            assert time.time() < deadline
            time.sleep(0.1)

        async def burst():
            async with httpx.AsyncClient(timeout=60) as c:
                results = []
                for k in range(40):
                    if k == 10:  # mid-burst: a newer best (the run's last/, other weights) is written
                        _swap_best(run, trained_run / "last", 200)
                    results += await asyncio.gather(*[c.post(s.url + "/predict", json=[REAL_SENTENCES[j]])
                                                      for j in range(4)])
                    await asyncio.sleep(0.05)
                return results

        results = asyncio.run(burst())
        assert [r.status_code for r in results] == [200] * 160  # none failed or dropped
        steps = [r.headers["x-bertmtl-step"] for r in results]
        assert steps[0] == "100" and steps[-1] == "200" and steps == sorted(steps, key=int)  # old, then new
        assert httpx.get(s.url + "/info").json()["step"] == 200
        assert _metric(httpx.get(s.url + "/metrics").text, "bertmtl_checkpoint_swaps_total") == 1
        assert any("checkpoint: " in x and "step 200" in x for x in s.lines)
    finally:
        assert s.stop() == 0


@pytest.mark.slow
def test_sigterm_under_load_answers_every_accepted_request_then_exits_0(trained_run):
    s = Server(trained_run / "best", "--max-wait-ms", 20)
    n = len(REAL_SENTENCES)
    body = json.dumps([[REAL_SENTENCES[i % n], REAL_SENTENCES[(i + 1) % n]] for i in range(40)])

    async def load():
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=100)) as c:
            async def one():
                try:
                    return (await c.post(s.url + "/predict", content=body)).status_code
                except httpx.ConnectError:
                    return "not accepted"
                except httpx.HTTPError as e:
                    return f"lost: {type(e).__name__}"

            tasks = [asyncio.create_task(one()) for _ in range(48)]
            deadline = time.time() + 60
            while _metric((await c.get(s.url + "/metrics")).text, "bertmtl_requests_in_flight") < 8:
                assert time.time() < deadline
                await asyncio.sleep(0.01)
            s.proc.send_signal(signal.SIGTERM)  # with requests in flight
            return await asyncio.gather(*tasks)

    try:
        outcomes = asyncio.run(load())
    finally:
        code = s.stop()  # SIGTERM again, if the load failed before sending it
    assert code == 0
    assert s.lines[-1] == "stopped (SIGTERM)"
    assert not [o for o in outcomes if isinstance(o, str) and o.startswith("lost")], outcomes
    assert outcomes.count(200) >= 8 and set(outcomes) <= {200, "not accepted"}
