"""Starting the server: the checkpoint loaded (or followed), the worker, the application, and uvicorn
on a socket of our own (so that --port 0 can say which port it got before serving)."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import threading
from pathlib import Path

from ..errors import UserError, extra_hint

TOKEN_ENV = "BERTMTL_SERVE_TOKEN"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def require_serving() -> None:
    """A UserError saying how to install what serving needs, when it is missing."""
    import importlib.util

    for module in ("fastapi", "uvicorn", "prometheus_client"):
        if importlib.util.find_spec(module) is None:
            raise UserError(f"bertmtl serve needs {module}: "
                            f"{extra_hint('serve', 'fastapi uvicorn[standard] prometheus_client')}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to anything
        return False


def token_of(cfg) -> str | None:
    """--token, else $BERTMTL_SERVE_TOKEN; a UserError when the address is not loopback and there is none,
    or when it is blank (it could never be matched: headers lose their surrounding spaces)."""
    token = cfg.token if cfg.token is not None else os.environ.get(TOKEN_ENV) or None
    if token is not None and (not token.strip() or token != token.strip()):
        raise UserError("--token must not be blank or start or end with spaces (it could never be sent as given)")
    if token is None and not is_loopback(cfg.host):
        raise UserError(f"--host {cfg.host} listens beyond this machine: give --token (or set {TOKEN_ENV}), which "
                        f"every request must then send as `Authorization: Bearer TOKEN`")
    return token


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(cfg, say=print) -> None:
    """Serve until SIGINT or SIGTERM (requests in flight are answered first); `say(text)` hears what
    answers and where."""
    require_serving()
    token = token_of(cfg)
    import uvicorn

    from ..inference.predict import Predictor
    from ..model.device import pick_device
    from .app import Limits, Metrics, create_app
    from .worker import Batcher, ModelHolder

    device = str(pick_device(cfg.device))
    if cfg.follow is not None:
        from ..runs.rundir import is_checkpoint

        if is_checkpoint(cfg.follow):
            raise UserError(f"--follow {cfg.follow} is a checkpoint, which never changes: serve it as "
                            f"`bertmtl serve {cfg.follow}`, or follow its run")
    sock = bind(cfg.host, cfg.port)  # before the model loads: a port in use is said at once

    def load(path):
        return Predictor(path, device=device, batch_size=cfg.batch_size, precision=cfg.precision,
                         runs_dir=cfg.runs_dir, threads=cfg.threads)

    holder = ModelHolder(load)
    if cfg.follow is None:
        try:
            served = holder.open(cfg.source)
        except BaseException:
            sock.close()
            raise
        if served.predictor.note:
            say(f"note: {served.predictor.note}")
        say(f"checkpoint: {served.predictor.describe()}")
    limits = Limits(cfg.max_body, cfg.max_items, cfg.max_chars, cfg.max_concurrent, cfg.max_queue)
    metrics = Metrics()
    batcher = Batcher(holder, cfg.max_batch, cfg.max_wait_ms / 1000, cfg.max_queue, observe=metrics.observe_pass)
    if cfg.follow is not None:
        def swapped(served, replaced: bool) -> None:
            if replaced:
                metrics.swaps.inc()
            say(f"checkpoint: {served.predictor.describe()}")

        waiting = "" if Path(cfg.follow).is_dir() else " (not there yet)"
        say(f"following {cfg.follow}{waiting}: serving its best checkpoint once it has one, and each newer one")
        holder.follow(Path(cfg.follow), cfg.poll, swapped)
    app = create_app(holder, batcher, limits, metrics, token, follow=cfg.follow, read_timeout=cfg.read_timeout)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    say(f"serving on http://{shown}:{port} (POST /predict, /encode; GET /info, /health, /ready, /metrics, /docs)"
        + ("; requests need the token" if token else ""))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=cfg.drain_timeout))
    # uvicorn stops on SIGINT/SIGTERM once the requests in flight are answered, then raises the signal
    # again for the handler that was there before it: ours notes it, so a stop asked for is exit 0
    # rather than death by the signal (a service manager counts that as a failure).
    asked: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    before = {s: signal.signal(s, lambda sig, frame: asked.append(sig)) for s in STOP_SIGNALS} if main else {}
    try:
        server.run(sockets=[sock])
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        sock.close()
        holder.close()
    if asked:
        say(f"stopped ({signal.Signals(asked[0]).name})")
