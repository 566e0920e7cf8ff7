"""The Predictor: load a checkpoint once, answer sentences, pairs and streams of them.

`bertmtl predict`, stdin scripting and the TUI playground all go through this class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Iterable, Iterator, Sequence

import torch

from ..model.device import autocast_dtype, pick_device
from ..tasks import BUILTIN, TaskSpec
from ..tasks.answers import Answer
from .protocol import Item  # the stdin protocol's items, which the Predictor answers

# Longer inputs are cut before tokenising (the model sees at most max_length tokens anyway):
# tokenising a megabyte to keep 128 tokens would only cost time and memory.
MAX_CHARS = 20_000


class Predictor:
    """A trained multi-task model ready to answer; load once, call many times."""

    def __init__(self, checkpoint: str | Path | None = None, device: str = "auto", batch_size: int = 64,
                 precision: str = "auto", runs_dir: str | Path | None = None, threads: int | None = None):
        """Load a checkpoint to answer with.

        Args:
            checkpoint: a checkpoint directory, or a run directory (its best/, else its last/);
                None: the most recent run under `runs_dir` that has one, as `bertmtl predict` picks.
            device: "auto" (CUDA when available), "cpu" or "cuda".
            batch_size: sentences per forward pass.
            precision: "auto" (bf16 where the hardware multiplies it natively), "fp32" or "bf16".
            runs_dir: where runs are found [default: $BERTMTL_RUNS, else ./checkpoints].
            threads: torch's CPU threads for this process (None leaves them as they are).
        """
        from ..runs.checkpoint import load_checkpoint
        from ..runs.catalog import choose_checkpoint, encoder_of
        from ..threads import use_threads

        use_threads(threads)

        choice = choose_checkpoint(checkpoint, runs_dir)
        self.path, self.note = choice.path, choice.note  # note: why this is not a best/ checkpoint
        self.device = pick_device(device)
        self.autocast_dtype = autocast_dtype(precision, self.device, training=False)
        ck = load_checkpoint(self.path, device=self.device)
        self.model, self.tokenizer, self.metrics = ck.model, ck.tokenizer, ck.metrics
        self.step = ck.info.get("step")  # None for an ensemble, whose members have steps of their own
        self._described = ck.describe()
        self.members = [m.path for m in ck.members]  # an ensemble's member checkpoints (else none)
        self.encoder = encoder_of(ck.train_args)  # the encoder it was trained from (a name or a path)
        self.cross = self.model.cfg.cross
        self.batch_size = batch_size

    @classmethod
    def from_run(cls, run: str | Path | None = None, **options) -> "Predictor":
        """The model of a run: its best/ checkpoint, else its last/ (`run` None: the most recent run
        under `runs_dir`, as `bertmtl predict` picks). `options` as for the constructor."""
        from ..errors import UserError
        from ..runs.rundir import is_checkpoint

        if run is not None and is_checkpoint(run):
            raise UserError(f"{run} is a checkpoint, not a run directory; Predictor.from_checkpoint takes it")
        return cls(run, **options)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, **options) -> "Predictor":
        """The model of one checkpoint directory (a run's best/ or last/). `options` as for the constructor."""
        from ..errors import UserError
        from ..runs.rundir import is_checkpoint

        if not is_checkpoint(checkpoint):
            raise UserError(f"{checkpoint} is not a bertmtl checkpoint (no bertmtl.json in it); "
                            f"a run directory goes to Predictor.from_run")
        return cls(checkpoint, **options)

    def encode(self, sentences: str | Sequence[str], batch_size: int | None = None,
               normalize: bool = False) -> torch.Tensor:
        """Sentence embeddings, pooled as the model pools them for its tasks: what `SentenceTransformer
        (DIR).encode` returns for this run's sentence-transformers export (at `precision="fp32"`).

        Args:
            sentences: one sentence (a 1-D result) or a list of them (one row each, in order).
            batch_size: sentences per forward pass [default: the Predictor's].
            normalize: scale each embedding to length 1 (for cosine similarity as a dot product).

        Returns:
            float32 embeddings on the CPU (`.numpy()` makes them an array).
        """
        from ..errors import UserError
        from ..tasks.text import text_problem

        one = isinstance(sentences, str)
        texts = [sentences] if one else list(sentences)
        for i, t in enumerate(texts):
            if problem := text_problem(t):
                raise UserError(f"sentence {i + 1} is {problem}")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a whole number >= 1, not {batch_size!r}")
        if not texts:
            return torch.empty(0, self.model.embedding_size)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.autocast_dtype,
                                                    enabled=self.autocast_dtype is not None):
            enc = self._encode(texts)
            out = self._embed([e.ids for e in enc], batch_size=batch_size).float().cpu()
        if normalize:
            out = torch.nn.functional.normalize(out, dim=-1)
        return out[0] if one else out

    def describe(self) -> str:
        """Which checkpoint answers, for people: its path, step and dev overall score (an ensemble:
        its score, then each member's checkpoint, step and score)."""
        return self._described

    # -- the public calls ---------------------------------------------------------------

    @property
    def specs(self) -> list[TaskSpec]:
        """The checkpoint's tasks, which `predict` answers."""
        return [s for s in self.model.specs.values() if s.output.answers]  # not masked LM

    def sentence(self, text: str) -> dict:
        """Every single-sentence task's answer for one sentence (UserError if it is not valid text)."""
        return self._one(Item(1, text))

    def pair(self, a: str, b: str) -> dict:
        """Every task's answer for a pair: sentence tasks for each sentence, pair tasks for the pair."""
        return self._one(Item(1, a, b))

    def predict(self, items: Iterable[str | tuple[str, str] | Mapping[str, object]]) -> list[Prediction]:
        """Answers for many items, in order, as typed Predictions; `to_dict()` of each is the line
        `bertmtl predict -` writes for the same item.

        Each item is a sentence (a str, taken whole: never split at tabs or read as JSON), a pair
        (two sentences in a tuple) or a mapping like a JSON line of the stdin protocol
        (`{"sentence": ...}` or `{"sentence1": ..., "sentence2": ...}`, with an optional "id" echoed
        back). An item that cannot be answered gets a Prediction whose `error` says why (and `line`
        its position from 1); it never costs the others their answers. Items are tokenised and
        answered a window at a time (an iterator of them is read as it goes); the answers come back
        as one list.
        """
        from .protocol import item_of

        if isinstance(items, (str, Mapping)):
            raise TypeError("predict() takes a list of items; one sentence is predict([text]) or sentence(text)")

        parsed = (item_of(n, x) for n, x in enumerate(items, 1))
        return [Prediction.of(res, self.specs) for window in self.stream_windows(parsed) for res in window]

    def answers(self, items: list[Item]) -> Iterator[dict]:
        """Results for a list of items, in order, one per item: an item with `error`, or whose
        text the model cannot take, gives an error object and never costs the others theirs."""
        yield from self._answers(self._prepare(items))

    def _prepare(self, items: list[Item]) -> _Window:
        """The model-free half of answering: texts checked, distinct sentences found, tokenised."""
        for it in items:
            _check_texts(it)  # before batching: one bad text would fail the whole batch
        w = _Window(items)
        try:
            good = [it for it in items if it.error is None]
            for it in good:
                for t in (it.text_a, it.text_b):
                    if t is not None:
                        w.singles.setdefault(t, len(w.singles))
            w.enc = self._encode(list(w.singles))
            w.pairs = [it for it in good if it.text_b is not None]
            if self.cross and w.pairs and any(s.pair for s in self.specs):
                w.cross = self._encode([p.text_a for p in w.pairs], [p.text_b for p in w.pairs])
        except Exception as e:  # noqa: BLE001 - a failure the checks did not foresee: answer the
            w.failed = e  # items one at a time, so only its item fails
        return w

    def _prepared(self, items: list[Item]) -> _Window:
        """_prepare, raising what failed (for one item alone: its error names the failure)."""
        w = self._prepare(items)
        if w.failed is not None:
            raise w.failed
        return w

    def _answers(self, w: _Window) -> list[dict]:
        if w.failed is None:
            try:
                return self._run(w)
            except Exception:  # noqa: BLE001 - as in _prepare: one at a time, so only its item fails
                pass
        return [self._alone(it) for it in w.items]

    def _answer(self, w: _Window) -> Iterator[dict]:
        model = self.model
        specs = self.specs
        sentence_specs = [s for s in specs if not s.pair]
        pair_specs = [s for s in specs if s.pair]
        items, singles, enc, pairs = w.items, w.singles, w.enc, w.pairs
        pooled = self._embed([e.ids for e in enc]) if singles else None

        def outputs(spec: TaskSpec, answer: torch.Tensor):  # the model's answers and their decisions
            answer = answer.cpu()
            return answer, spec.output.decide(answer)

        per_sentence = {s.name: outputs(s, model.answer(s.name, pooled)) for s in sentence_specs} if singles else {}
        per_pair: dict[str, tuple] = {}
        pair_trunc = [False] * len(pairs)
        if pairs and pair_specs:
            # The pairs' two sentences' embeddings (bi-encoded heads), or their joint ones (cross).
            ia = torch.tensor([singles[p.text_a] for p in pairs])
            ib = torch.tensor([singles[p.text_b] for p in pairs])
            u, v, joint = pooled[ia.to(pooled.device)], pooled[ib.to(pooled.device)], None
            if w.cross is not None:
                joint = self._embed([e.ids for e in w.cross], [e.type_ids for e in w.cross])
                pair_trunc = [e.truncated for e in w.cross]
            per_pair = {s.name: outputs(s, model.pair_answer(s.name, u, v, joint)) for s in pair_specs}
        pair_row = {id(p): k for k, p in enumerate(pairs)}
        for it in items:
            if it.error is not None:
                yield self._with_id({"line": it.line, "error": it.error}, it)
                continue
            ra = singles[it.text_a]
            truncated = enc[ra].truncated
            out = {}
            if it.text_b is None:
                for s in sentence_specs:
                    o, d = per_sentence[s.name]
                    out.update(s.output.answer(s, o[ra], d[ra]))
            else:
                rb, k = singles[it.text_b], pair_row[id(it)]
                truncated = truncated or enc[rb].truncated or pair_trunc[k]
                for s in sentence_specs:
                    o, d = per_sentence[s.name]
                    out.update(s.output.answer(s, o[ra], d[ra], "1"))
                    out.update(s.output.answer(s, o[rb], d[rb], "2"))
                for s in pair_specs:
                    o, d = per_pair[s.name]
                    out.update(s.output.answer(s, o[k], d[k]))
            if truncated:
                out["truncated"] = f"input longer than the model's maximum ({self.tokenizer.max_length} tokens); the rest was ignored"
            yield self._with_id(out, it)

    def stream(self, items: Iterable[Item], window: int = 1024, ready=None) -> Iterator[dict]:
        """Results for an iterable of items, in input order (stream_windows, one result at a time)."""
        for results in self.stream_windows(items, window, ready):
            yield from results

    def stream_windows(self, items: Iterable[Item], window: int = 1024, ready=None) -> Iterator[list[dict]]:
        """Results for an iterable of items, in input order, a window's list at a time.

        Memory stays bounded by a few windows (the one answered, one waiting, one being read)
        whatever the input length. `ready()` (optional) says whether more input is waiting; when
        it is not, the partial window is answered at once, so an interactive producer sees
        results without filling a window first. The next window is read, checked and tokenised
        on a thread of its own while the model answers this one, so input that trickles in while
        the model works is cut into windows of what has arrived. On a CPU whose encoder is fast
        (bf16), reading, parsing and tokenising in turn with the model cost `predict -` a large
        share of the encoder's rate (57% reached); on the 2-core EPYC in fp32 they are ~1% of the
        time (benchmarks/predict.py, docs: Benchmarks).
        """
        def windows() -> Iterator[_Window]:
            buf: list[Item] = []
            for it in items:
                buf.append(it)
                if len(buf) >= window or (ready is not None and not ready()):
                    yield self._prepare(buf)
                    buf = []
            if buf:
                yield self._prepare(buf)

        for w in _ahead(windows()):
            yield self._answers(w)

    # -- internals ----------------------------------------------------------------------

    def _run(self, w: _Window) -> list[dict]:
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.autocast_dtype,
                                                    enabled=self.autocast_dtype is not None):
            return list(self._answer(w))

    def _one(self, it: Item) -> dict:
        """One item's answer; a bad text raises UserError (a caller's single input, not a stream)."""
        from ..errors import UserError

        if _check_texts(it):
            raise UserError(it.error)
        return self._run(self._prepared([it]))[0]

    def _alone(self, it: Item) -> dict:
        """One item's answer after its batch failed: an error object if it fails alone too."""
        try:
            return self._run(self._prepared([it]))[0]
        except Exception as e:  # noqa: BLE001 - one line's failure is that line's answer
            msg = f"could not be answered ({type(e).__name__}: {e})"[:500]
            return self._with_id({"line": it.line, "error": msg}, it)

    @staticmethod
    def _with_id(out: dict, it: Item) -> dict:
        return {"id": it.id, **out} if it.id is not None else out

    def _encode(self, texts: list[str], pairs: list[str] | None = None):
        cut = [t[:MAX_CHARS] for t in texts]
        enc = self.tokenizer.encode(cut, None if pairs is None else [t[:MAX_CHARS] for t in pairs])
        for i, t in enumerate(texts):
            if len(t) > MAX_CHARS or (pairs is not None and len(pairs[i]) > MAX_CHARS):
                enc[i].truncated = True
        return enc

    def _embed(self, ids: list[list[int]], type_ids: list[list[int]] | None = None,
               batch_size: int | None = None) -> torch.Tensor:
        """Pooled sentence embeddings, batched by length (less padding), in input order."""
        from ..encoders.tokenizer import Encoded

        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [None] * len(ids)
        size = batch_size or self.batch_size
        for s in range(0, len(order), size):
            idx = order[s:s + size]
            batch = self.tokenizer.pad([Encoded(ids[i], type_ids[i] if type_ids else [0] * len(ids[i])) for i in idx])
            batch = batch.to(self.device)
            pooled = self.model.pooled(batch)
            for i, row in zip(idx, pooled):
                out[i] = row
        return torch.stack(out)


@dataclass(frozen=True)
class Prediction:
    """One item's answers, typed: by task name (a pair's sentence tasks once per sentence, as NAME1
    and NAME2), or `error` when it could not be answered. `to_dict()` is the JSON line of `bertmtl
    predict -` for it."""

    answers: dict[str, Answer]
    id: str | int | float | None = None
    error: str | None = None
    line: int | None = None  # the item's position from 1, given with an error
    truncated: bool = False  # a text was longer than the model reads, and cut
    json: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, res: dict, specs) -> "Prediction":
        answers = {s.name + suffix: s.output.typed(s, res, suffix)
                   for s in specs for suffix in (("",) if s.pair else ("", "1", "2")) if s.json_keys[0] + suffix in res}
        return cls(answers, res.get("id"), res.get("error"), res.get("line"), bool(res.get("truncated")), dict(res))

    def __getitem__(self, task: str) -> Answer:
        return self.answers[task]

    def to_dict(self) -> dict:
        return dict(self.json)


@dataclass
class _Window:
    """Items on their way through the Predictor: `_prepare` fills it, `_answer` reads it."""

    items: list[Item]
    singles: dict[str, int] = field(default_factory=dict)  # distinct sentence -> its row
    enc: list = field(default_factory=list)  # their tokens, row by row
    pairs: list[Item] = field(default_factory=list)  # the answerable pairs
    cross: list | None = None  # the pairs' joint tokens (cross-encoded heads)
    failed: Exception | None = None  # why preparing failed: then the items are answered one at a time


def _ahead(source: Iterator, depth: int = 1) -> Iterator:
    """`source`'s values, computed on a daemon thread while the consumer works: up to `depth`
    values wait in a queue, and the thread computes one more meanwhile.

    An exception in the source (a read error; Ctrl-C reaches the main thread, not this one) is
    raised in the consumer after the values before it. When the consumer stops early, the thread
    stops at its next value (or at once if it is waiting to hand one over) and closes the
    source; one blocked reading input ends with the process.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def hand_over(item) -> bool:  # False when the consumer has gone
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for value in source:
                if not hand_over((value, None)):
                    break
            else:
                hand_over((done, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            hand_over((done, e))
        finally:
            close = getattr(source, "close", None)
            if stop.is_set() and close is not None:
                close()

    threading.Thread(target=produce, name="bertmtl-read-ahead", daemon=True).start()
    try:
        while True:
            value, error = q.get()
            if value is done:
                if error is not None:
                    raise error
                return
            yield value
    finally:
        stop.set()
        while not q.empty():  # what the thread prepared for nobody (it may be blocked handing it over)
            q.get_nowait()


def _check_texts(it: Item) -> str | None:
    """Set (and return) it.error if one of its texts is not something the tokenizer can take."""
    from ..encoders.tokenizer import text_problem

    named = [("the sentence", it.text_a)] if it.text_b is None else [("sentence 1", it.text_a), ("sentence 2", it.text_b)]
    for name, text in named if it.error is None else []:
        if problem := text_problem(text):
            it.error = f"{name} is {problem}"
            break
    return it.error


def answer_rows(res: dict, specs=BUILTIN) -> list[tuple[str, str, str]]:
    """One answer as (name, prediction, details) rows for people, e.g.
    ("sentiment 1", "positive (4)", "p = 0.01 ..."), ("paraphrase", "yes", "p = 0.912")."""
    rows = []
    for s in specs:
        for suffix in ("", "1", "2") if not s.pair else ("",):
            if s.json_keys[0] + suffix in res:
                rows.append((s.answer_name + (f" {suffix}" if suffix else ""), *s.output.row(s, res, suffix)))
    return rows
