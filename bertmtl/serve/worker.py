"""The model's side of the server: which checkpoint answers (`ModelHolder`), and one thread that
answers every request through it, merging the requests that arrive together (`Batcher`).

The event loop never runs the model: a request's items go to the worker's queue and the handler
awaits a future that the worker resolves. The worker takes the first waiting job, lets others
join it for up to `max_wait` seconds or until `max_batch` items, and answers all of them in one
call of the Predictor (which tokenises the distinct sentences once and runs them length-sorted,
as `predict -` does), so 64 one-sentence requests cost about what one 64-sentence request does.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


class QueueFull(Exception):
    """More items wait for the model than --max-queue allows."""


class NotReady(Exception):
    """No checkpoint to answer with yet (--follow of a run that has not written best/)."""


@dataclass
class Served:
    """A loaded checkpoint and what /info and the answers' headers say of it."""

    predictor: object  # inference.predict.Predictor
    path: Path
    step: int | None
    marker: tuple | None = None  # (step, mtime) of its bertmtl.json when it was loaded (--follow)


class ModelHolder:
    """The checkpoint that answers. With `follow(run)`, a thread watches the run's best/ and loads each
    newer complete one beside the current, then swaps it in: the worker takes the current one at the
    start of each pass, so a pass never mixes two models and no request waits for a load."""

    def __init__(self, load):
        self.load = load  # path -> Predictor
        self.current: Served | None = None
        self.swaps = 0  # newer checkpoints swapped in for the one answering (the first one is not)
        self.error: str | None = None  # why the last load of a newer checkpoint failed (it is retried)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self, path: Path) -> Served:
        predictor = self.load(path)
        self.current = Served(predictor, Path(predictor.path), predictor.step)
        return self.current

    def follow(self, run: Path, poll: float, on_swap=None) -> None:
        """Watch RUN/best (its bertmtl.json, written last: a checkpoint is complete once it is there)."""
        def watch() -> None:
            while True:
                self._look(Path(run), on_swap)
                if self._stop.wait(poll):
                    return

        self._thread = threading.Thread(target=watch, name="bertmtl-follow", daemon=True)
        self._thread.start()

    def _look(self, run: Path, on_swap) -> None:
        from ..runs.rundir import BEST, MARKER

        best = run / BEST
        seen = _marker(best / MARKER)
        if seen is None or (self.current is not None and self.current.marker == seen):
            return
        try:
            predictor = self.load(best)
        except Exception as e:  # noqa: BLE001 - a checkpoint replaced while it was read: try again next time
            self.error = f"{type(e).__name__}: {e}"
            return
        if _marker(best / MARKER) != seen:  # replaced while it loaded: what was read may mix two; next time
            return
        self.error = None
        replaced = self.current is not None
        self.current = Served(predictor, Path(predictor.path), predictor.step, seen)
        self.swaps += replaced
        if on_swap is not None:
            on_swap(self.current, replaced)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _marker(path: Path) -> tuple | None:
    """What identifies a checkpoint's version: its marker's content and modification time."""
    try:
        return path.read_bytes(), path.stat().st_mtime_ns
    except OSError:
        return None


@dataclass
class Job:
    """One request's work: answers for `items` (protocol Items) or embeddings of `sentences`."""

    kind: str  # "answer" or "encode"
    items: list
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    normalize: bool = False
    queued: float = field(default_factory=time.perf_counter)


@dataclass
class Done:
    """What the worker hands back: the results, the checkpoint that gave them, and how long the job waited."""

    results: object
    served: Served
    waited: float
    batch: int  # items in the pass that answered it


class Batcher:
    """The model's thread: jobs in, merged into passes of up to `max_batch` items, results out."""

    def __init__(self, holder: ModelHolder, max_batch: int, max_wait: float, max_queue: int, observe=None):
        self.holder, self.max_batch, self.max_wait, self.max_queue = holder, max_batch, max_wait, max_queue
        self.observe = observe  # observe(items in the pass, [queue wait of each job]): the metrics
        self._queue: queue.Queue = queue.Queue()
        self._waiting = 0  # items queued, not yet taken into a pass
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="bertmtl-model", daemon=True)
        self._thread.start()

    def submit(self, kind: str, items: list, normalize: bool = False) -> asyncio.Future:
        """Queue a job from the event loop; its future gets a Done (or the exception the pass raised)."""
        if self.holder.current is None:
            raise NotReady()
        with self._lock:
            if self._waiting + len(items) > self.max_queue:
                raise QueueFull()
            self._waiting += len(items)
        loop = asyncio.get_running_loop()
        job = Job(kind, items, loop, loop.create_future(), normalize)
        self._queue.put(job)
        return job.future

    @property
    def waiting(self) -> int:
        return self._waiting

    def close(self) -> None:
        """Answer what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _take(self) -> list[Job] | None:
        """The next pass's jobs: the first waiting one, and those that arrive within max_wait of it,
        up to max_batch items (a job is never split; one larger than max_batch goes alone)."""
        first = self._queue.get()
        if first is None:
            return None
        jobs, n = [first], len(first.items)
        deadline = time.perf_counter() + self.max_wait
        while n < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.perf_counter())) \
                    if self.max_wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:  # closing: answer this pass, then stop
                self._queue.put(None)
                break
            jobs.append(job)
            n += len(job.items)
            if n >= self.max_batch or time.perf_counter() >= deadline:
                break
        with self._lock:
            self._waiting -= n
        return jobs

    def _work(self) -> None:
        while (jobs := self._take()) is not None:
            served = self.holder.current  # one model for the whole pass, whatever --follow swaps in meanwhile
            start = time.perf_counter()
            n = sum(len(j.items) for j in jobs)
            if self.observe is not None:
                self.observe(n, [start - j.queued for j in jobs])
            try:
                results = self._answer(served.predictor, jobs)
            except Exception as e:  # noqa: BLE001 - the pass failed as a whole: each of its requests hears it
                for j in jobs:
                    j.loop.call_soon_threadsafe(_settle, j.future, None, e)
                continue
            for j, r in zip(jobs, results):
                j.loop.call_soon_threadsafe(_settle, j.future, Done(r, served, start - j.queued, n), None)

    @staticmethod
    def _answer(predictor, jobs: list[Job]) -> list:
        """Each job's results, from one call of the Predictor per kind of job."""
        out: list = [None] * len(jobs)
        answering = [k for k, j in enumerate(jobs) if j.kind == "answer"]
        if answering:
            answers = list(predictor.answers([it for k in answering for it in jobs[k].items]))
            at = 0
            for k in answering:
                out[k] = answers[at:at + len(jobs[k].items)]
                at += len(jobs[k].items)
        encoding = [k for k, j in enumerate(jobs) if j.kind == "encode"]
        if encoding:
            import torch

            vectors = predictor.encode([s for k in encoding for s in jobs[k].items])
            at = 0
            for k in encoding:
                part = vectors[at:at + len(jobs[k].items)]
                at += len(jobs[k].items)
                out[k] = torch.nn.functional.normalize(part, dim=-1) if jobs[k].normalize else part
        return out


def _settle(future: asyncio.Future, result, error) -> None:
    if future.done():  # the client went away and its handler was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
