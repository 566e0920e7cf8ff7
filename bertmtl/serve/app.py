"""The HTTP side of `bertmtl serve`: a FastAPI application over the model's worker (worker.py); imported
only by the command (serve/server.py checks the extra is installed first).

Routes: POST /predict and /encode, GET /info, /health, /ready, /metrics (Prometheus text), and the
OpenAPI schema at /openapi.json (/docs draws it). Every route but /health asks for the token when
there is one. Each request is read under the limits (body size, items, characters per text,
requests at once, items waiting, the time its body may take), and one that breaks a limit is
answered with its status and a JSON error naming the limit: {"error": ..., "limit": "max_items",
"max": 256}; so is every other refusal (404, 405, ...), as {"error": ...}.

POST /predict answers what `bertmtl predict -` answers: a JSON body (one item, or a list of them:
a sentence, a pair as a two-item list, or the stdin protocol's object with "sentence" or
"sentence1"/"sentence2" and an optional "id") gets the same objects as JSON (one, or a list);
an NDJSON or text body (the stdin lines themselves) gets `predict -`'s output lines byte for
byte. An item that cannot be answered gets its error object, as on stdin; the request succeeds.
Which checkpoint answered is in the X-Bertmtl-Checkpoint and X-Bertmtl-Step headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from dataclasses import asdict, dataclass

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from .worker import Batcher, ModelHolder, NotReady, QueueFull

# Bodies read as the stdin protocol's lines; anything else is JSON.
LINE_TYPES = ("application/x-ndjson", "application/jsonl", "application/jsonlines", "text/plain")
OPEN_ROUTES = ("/health",)  # no token asked


@dataclass(frozen=True)
class Limits:
    max_body: int
    max_items: int
    max_chars: int
    max_concurrent: int
    max_queue: int


class Refused(Exception):
    """A request answered with an error status: the status, the message, and the limit it broke."""

    def __init__(self, status: int, error: str, limit: str | None = None, maximum=None):
        super().__init__(error)
        self.status, self.error, self.limit, self.maximum = status, error, limit, maximum

    def body(self) -> dict:
        return {"error": self.error, **({"limit": self.limit, "max": self.maximum} if self.limit else {})}


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (not the process-wide default)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("bertmtl_requests", "Requests answered, by route and status code.",
                                ["route", "code"], registry=r)
        self.errors = Counter("bertmtl_request_errors", "Requests refused or failed, by route and reason.",
                              ["route", "reason"], registry=r)
        self.items = Counter("bertmtl_items", "Items (sentences or pairs) answered, by route.", ["route"], registry=r)
        self.item_errors = Counter("bertmtl_item_errors", "Items answered with an error object.", registry=r)
        self.latency = Histogram("bertmtl_request_seconds", "Time from a request's arrival to its answer.", ["route"],
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30), registry=r)
        self.batch = Histogram("bertmtl_batch_items", "Items answered together in one pass of the model.",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r)
        self.wait = Histogram("bertmtl_queue_wait_seconds", "Time a request waited for the model.",
                              buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5), registry=r)
        self.in_flight = Gauge("bertmtl_requests_in_flight", "Requests in progress.", registry=r)
        self.waiting = Gauge("bertmtl_queue_items", "Items waiting for the model.", registry=r)  # read off the batcher
        self.swaps = Counter("bertmtl_checkpoint_swaps", "Newer best checkpoints swapped in (--follow).", registry=r)

    def observe_pass(self, items: int, waits: list[float]) -> None:
        self.batch.observe(items)
        for w in waits:
            self.wait.observe(w)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def create_app(holder: ModelHolder, batcher: Batcher, limits: Limits, metrics: Metrics, token: str | None = None,
               follow: str | None = None, read_timeout: float = 10.0):
    """The ASGI application answering through `batcher` with the checkpoint `holder` keeps."""
    from .. import __version__

    metrics.waiting.set_function(lambda: batcher.waiting)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()  # after uvicorn has answered the requests in flight
        holder.close()

    # The schema and its page are routes of our own below, behind the token like the others.
    app = FastAPI(title="bertmtl", version=__version__, lifespan=lifespan, openapi_url=None, docs_url=None,
                  redoc_url=None, description="A multi-task model trained by bertmtl, answering over HTTP.")
    busy = [0]  # requests in progress (the event loop is one thread: no lock)

    @app.exception_handler(HTTPException)
    async def as_json(request: Request, e: HTTPException):  # 404, 405: the same shape as ours
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code, headers=e.headers)

    def refused(route: str, e: Refused, started: float) -> Response:
        metrics.errors.labels(route, e.limit or _reason(e.status)).inc()
        headers = {"Retry-After": "1"} if e.status in (429, 503) else \
            {"WWW-Authenticate": "Bearer"} if e.status == 401 else None  # busy for now / how to authenticate
        return _finish(route, JSONResponse(e.body(), status_code=e.status, headers=headers), started)

    def _finish(route: str, response: Response, started: float) -> Response:
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)
        return response

    async def guarded(request: Request, route: str, answer) -> Response:
        """Token, requests at once, body size, then `answer(request, body)`; refusals as JSON errors."""
        started = time.perf_counter()
        try:
            _check_token(request, token)
        except Refused as e:
            return refused(route, e, started)
        if busy[0] >= limits.max_concurrent:
            return refused(route, Refused(429, f"more than {limits.max_concurrent} requests at once; try again",
                                          "max_concurrent", limits.max_concurrent), started)
        busy[0] += 1
        metrics.in_flight.inc()
        try:
            try:
                body = await asyncio.wait_for(_read_body(request, limits.max_body), read_timeout) \
                    if request.method == "POST" else b""
            except asyncio.TimeoutError:  # a stalled upload gives its place back
                raise Refused(408, f"the body did not arrive within {read_timeout:g} s", "read_timeout",
                              read_timeout) from None
            return _finish(route, await answer(request, body), started)
        except Refused as e:
            return refused(route, e, started)
        except ClientDisconnect:  # gone before its body was in: nobody to answer, and no fault of ours
            return refused(route, Refused(499, "the client closed the connection"), started)
        except QueueFull:
            return refused(route, Refused(503, f"more than {limits.max_queue} items are waiting for the model; "
                                               f"try again", "max_queue", limits.max_queue), started)
        except NotReady:
            return refused(route, Refused(503, "no checkpoint to answer with yet: the followed run has not written "
                                               "best/"), started)
        except Exception as e:  # noqa: BLE001 - a pass that failed as a whole (out of memory, ...): said as JSON
            return refused(route, Refused(500, f"the model could not answer ({type(e).__name__}: {e})"[:500]),
                           started)
        finally:
            busy[0] -= 1
            metrics.in_flight.dec()

    def served_headers(done) -> dict:
        step = done.served.step  # an ensemble has none: its members were trained to steps of their own
        return {"X-Bertmtl-Checkpoint": str(done.served.path), **({"X-Bertmtl-Step": str(step)} if step is not None else {})}

    async def answer_predict(request: Request, body: bytes) -> Response:
        from ..inference.protocol import output_line, parse_line

        lines = request.headers.get("content-type", "").split(";")[0].strip().lower() in LINE_TYPES
        if lines:
            raw = body.split(b"\n")
            if raw and raw[-1] == b"":  # the last line's newline, not a line of its own
                raw.pop()
            items = [parse_line(n, line) for n, line in enumerate(raw, 1)]
            single = False
        else:
            items, single = _json_items(body)
        _check_items(items, limits)
        done = await batcher.submit("answer", items)
        metrics.items.labels("predict").inc(len(items))
        metrics.item_errors.inc(sum("error" in r for r in done.results))
        specs = done.served.predictor.specs
        if lines:
            data = b"".join(output_line(r, r.get("line", n), "jsonl", specs)[0]
                            for n, r in enumerate(done.results, 1))
            return Response(data, media_type="application/x-ndjson", headers=served_headers(done))
        return _json(done.results[0] if single else done.results, served_headers(done))

    async def answer_encode(request: Request, body: bytes) -> Response:
        sentences, single, normalize = _encode_request(body, limits)
        done = await batcher.submit("encode", sentences, normalize)
        metrics.items.labels("encode").inc(len(sentences))
        vectors = done.results.tolist()
        return _json({"embedding": vectors[0]} if single else {"embeddings": vectors}, served_headers(done))

    async def answer_info(request: Request, body: bytes) -> Response:
        served = holder.current
        if served is None:
            raise NotReady()
        p = served.predictor
        encoders = [e.config for e in p.model.encoders]  # an ensemble's: one per member (the first named)
        return _json({"checkpoint": str(served.path), "step": served.step, "dev": p.metrics,
                      "encoder": {"name": p.encoder, "family": encoders[0].model_type,
                                  "layers": encoders[0].num_hidden_layers, "hidden": encoders[0].hidden_size},
                      "members": [str(m) for m in p.members], "embedding_size": p.model.embedding_size,
                      "tasks": [_task(s) for s in p.specs], "follow": follow, "swaps": holder.swaps,
                      "limits": asdict(limits), "max_batch": batcher.max_batch,
                      "max_wait_ms": batcher.max_wait * 1000, "device": str(p.device), "version": __version__})

    async def answer_ready(request: Request, body: bytes) -> Response:
        served = holder.current
        if served is None:
            raise NotReady()
        return _json({"ready": True, "checkpoint": str(served.path), "step": served.step})

    async def answer_metrics(request: Request, body: bytes) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    body_doc = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"description": "An item or a list of items: a sentence, a pair (a list of "
                                                       "two sentences), or {\"sentence\": ...} / {\"sentence1\": ..., "
                                                       "\"sentence2\": ...} with an optional \"id\"."}},
        "application/x-ndjson": {"schema": {"type": "string", "description": "Lines as `bertmtl predict -` reads "
                                                                             "them."}}}}}

    @app.post("/predict", openapi_extra=body_doc, summary="Answer sentences and pairs with every task")
    async def predict(request: Request):
        return await guarded(request, "predict", answer_predict)

    @app.post("/encode", summary="Sentence embeddings", openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"description": "A sentence, a list of them, or {\"sentences\": [...], "
                                                       "\"normalize\": true}."}}}}})
    async def encode(request: Request):
        return await guarded(request, "encode", answer_encode)

    @app.get("/info", summary="Which checkpoint answers, its tasks and dev metrics")
    async def info(request: Request):
        return await guarded(request, "info", answer_info)

    @app.get("/health", summary="The server is up (no token asked)")
    async def health():
        return {"status": "ok"}

    @app.get("/ready", summary="A checkpoint is loaded and answers")
    async def ready(request: Request):
        return await guarded(request, "ready", answer_ready)

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus(request: Request):
        return await guarded(request, "metrics", answer_metrics)

    async def answer_schema(request: Request, body: bytes) -> Response:
        return _json(app.openapi())

    async def answer_docs(request: Request, body: bytes) -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="bertmtl")

    @app.get("/openapi.json", include_in_schema=False)
    async def schema(request: Request):
        return await guarded(request, "openapi", answer_schema)

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request):
        return await guarded(request, "docs", answer_docs)

    return app


def _reason(status: int) -> str:
    return {401: "token", 413: "too_large", 422: "invalid", 429: "busy", 499: "disconnected", 500: "model",
            503: "unavailable"}.get(status, str(status))


def _check_token(request, token: str | None) -> None:
    if token is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    # compare_digest takes the same time wherever the two differ: the token cannot be guessed a
    # character at a time from response times.
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise Refused(401, "missing or wrong token: send `Authorization: Bearer TOKEN`")


async def _read_body(request, limit: int) -> bytes:
    """The body, read no further than `limit` bytes (413 beyond, whatever Content-Length claims)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"the body is {int(declared)} bytes, more than {limit}", "max_body", limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"the body is more than {limit} bytes", "max_body", limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _json_body(body: bytes, expected: str):
    """The JSON of a body, or 422 saying what is wrong and what the route takes (`expected`)."""
    try:
        return json.loads(body)
    except UnicodeDecodeError as e:
        raise Refused(422, f"the body is not valid UTF-8 (at byte {e.start})") from None
    except RecursionError:
        raise Refused(422, "invalid JSON (nested too deeply)") from None
    except json.JSONDecodeError as e:
        raise Refused(422, f"invalid JSON ({e.msg} at column {e.colno}); send {expected}") from None
    except ValueError:  # the only other: an integer past Python's limit on digits
        raise Refused(422, f"invalid JSON (a number too long); send {expected}") from None


def _json_items(body: bytes) -> tuple[list, bool]:
    """A JSON body's items (protocol Items) and whether it was one item rather than a list."""
    from ..inference.protocol import item_of

    data = _json_body(body, "an item, a list of items, or lines as application/x-ndjson")
    single = not isinstance(data, list)
    raw = [data] if single else data
    if not raw:
        raise Refused(422, "no items: send a sentence, a pair, an object, or a list of them")
    return [item_of(n, x) for n, x in enumerate(raw, 1)], single


def _check_items(items: list, limits: Limits) -> None:
    if len(items) > limits.max_items:
        raise Refused(413, f"{len(items)} items in one request, more than {limits.max_items}", "max_items",
                      limits.max_items)
    for n, it in enumerate(items, 1):
        for t in (it.text_a, it.text_b):
            if isinstance(t, str) and len(t) > limits.max_chars:
                raise Refused(413, f"item {n} has a text of {len(t)} characters, more than {limits.max_chars}",
                              "max_chars", limits.max_chars)


def _encode_request(body: bytes, limits: Limits) -> tuple[list[str], bool, bool]:
    """(sentences, one sentence rather than a list, normalize) of an /encode body."""
    from ..tasks.text import text_problem

    data = _json_body(body, 'a sentence, a list of sentences, or {"sentences": [...]} as JSON')
    normalize = False
    if isinstance(data, dict):
        if set(data) - {"sentences", "normalize"} or "sentences" not in data or \
                not isinstance(data.get("normalize", False), bool):
            raise Refused(422, 'expected {"sentences": [...], "normalize": true or false}')
        data, normalize = data["sentences"], data.get("normalize", False)
    single = isinstance(data, str)
    sentences = [data] if single else data
    if not isinstance(sentences, list) or not sentences:
        raise Refused(422, "send a sentence, a list of sentences, or {\"sentences\": [...]}")
    if len(sentences) > limits.max_items:
        raise Refused(413, f"{len(sentences)} sentences in one request, more than {limits.max_items}", "max_items",
                      limits.max_items)
    for n, s in enumerate(sentences, 1):
        if not isinstance(s, str) or not s.strip():
            raise Refused(422, f"sentence {n} is not a non-empty string")
        if problem := text_problem(s):
            raise Refused(422, f"sentence {n} is {problem}")
        if len(s) > limits.max_chars:
            raise Refused(413, f"sentence {n} has {len(s)} characters, more than {limits.max_chars}", "max_chars",
                          limits.max_chars)
    return sentences, single, normalize


def _task(spec) -> dict:
    out = {"name": spec.name, "kind": spec.kind, "answers": list(spec.json_keys)}
    if spec.labels:
        out["labels"] = list(spec.labels)
    if spec.value_range:
        out["range"] = list(spec.value_range)
    return out


def _json(obj, headers: dict | None = None):
    # ensure_ascii=False as `predict -` writes its lines; the answers hold no NaN (allow_nan=False says so loudly)
    return Response(json.dumps(obj, ensure_ascii=False, allow_nan=False).encode(), media_type="application/json",
                    headers=headers)
