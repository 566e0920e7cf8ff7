"""The Playground pane: type one or two sentences, see what the three heads say.

The model is loaded and called in thread workers, so the interface never waits for torch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from time import perf_counter

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.timer import Timer
from textual.widgets import Input, Static
from textual.worker import get_current_worker

from ..tasks import BUILTIN, TaskSpec
from .bars import text_bar
from ..runs.rundir import checkpoint_identity

# The pane shows the first single-sentence task as bars per class (one panel per sentence),
# other single-sentence tasks as one line each below them, and every pair task as one bar
# each; the answers are found under the tasks' JSON keys. The tasks are the loaded
# checkpoint's (the built-in three until one is loaded).
SENTENCE_SPEC = next(s for s in BUILTIN if not s.pair)
PAIR_SPECS = tuple(s for s in BUILTIN if s.pair)
# Narrow panels name the sentiment classes short, and colour them from negative to positive.
SHORT_LABELS = ("neg", "some neg", "neutral", "some pos", "pos")
SENTIMENT_COLORS = ("#c01c28", "#e66100", "#9a9996", "#2ec27e", "#26a269")
# Wait this long after the last keystroke before predicting: typing stays smooth, and the
# answer still shows up as soon as one pauses.
DEBOUNCE_S = 0.15
# A checkpoint replaced while we read it is read again, at most this many times.
LOAD_TRIES = 3
# A checkpoint that fails to load is tried again after this long, doubling up to the maximum
# (one still being copied in place completes; a broken one does not cost a load a second).
RETRY_S, MAX_RETRY_S = 1.0, 60.0


def default_predictor(path: Path):
    """The Predictor of `bertmtl predict` (imported here: torch loads in the worker thread)."""
    from ..inference.predict import Predictor

    return Predictor(path, device="cpu")  # beside a run that may hold the GPU


def describe_checkpoint(predictor, fallback: Path) -> str:
    """RUN/best (step N, dev overall X): which model answers, read from its files."""
    path = Path(getattr(predictor, "path", fallback))
    info = []
    if isinstance(getattr(predictor, "step", None), int):
        info.append(f"step {predictor.step}")
    if members := getattr(predictor, "members", None):
        info.append(f"an ensemble of {len(members)}")
    overall = (getattr(predictor, "metrics", None) or {}).get("overall")
    if isinstance(overall, (int, float)):
        info.append(f"dev overall {overall:.3f}")
    return f"{path.parent.name}/{path.name}" + (f" ({', '.join(info)})" if info else "")


class SentimentBars(Static):
    """Predicted sentiment: the label, then one bar per class with its probability."""

    # (result, suffix): the answer of `spec` is under its JSON keys + suffix ("" for one sentence,
    # "1" or "2" for a pair's); the task's output kind reads it.
    answer: reactive[tuple | None] = reactive(None)
    hint: reactive[str] = reactive("")
    spec = SENTENCE_SPEC  # the task drawn as bars
    others: reactive[tuple] = reactive(tuple)  # ((spec, result, suffix), ...) of other sentence tasks, one line each

    def render(self) -> Text:
        if self.answer is None:
            return Text(self.hint, style="dim")
        res, suffix = self.answer
        out = Text(no_wrap=True)
        view = self.spec.output.probabilities(self.spec, res, suffix)
        if view is None:  # a score (a regression task drawn here): one line
            out.append(self.spec.output.brief(self.spec, res, suffix), style="bold")
            self._append_others(out)
            return out
        best, probabilities = view
        width = self.content_size.width
        full = self.spec.labels
        labels = full if width >= 36 or len(SHORT_LABELS) != len(full) else SHORT_LABELS
        label_w = max(len(x) for x in labels)
        bar_w = max(3, width - label_w - 6)
        out.append(f"{full[best]}", style=f"bold {SENTIMENT_COLORS[best % len(SENTIMENT_COLORS)]}")
        out.append(f"  p={probabilities[best]:.2f}", style="dim")
        for i, (label, p) in enumerate(zip(labels, probabilities)):
            out.append("\n" + label.ljust(label_w) + " ", style="bold" if i == best else "")
            out.append(text_bar(p, bar_w), style=SENTIMENT_COLORS[i % len(SENTIMENT_COLORS)])
            out.append(f" {p:.2f}", style="bold" if i == best else "dim")
        self._append_others(out)
        return out

    def _append_others(self, out: Text) -> None:
        for spec, res, suffix in self.others:
            out.append("\n" + spec.answer_name + " ", style=f"bold {spec.color}")
            out.append(spec.output.brief(spec, res, suffix))


class PairScores(Static):
    """The pair tasks' answers for the two sentences, one bar each (as each task's output kind
    gauges it): a probability with its yes/no or label (paraphrase), a score on its range
    (similarity 0-5)."""

    scores: reactive[dict | None] = reactive(None)
    hint: reactive[str] = reactive("")
    specs = PAIR_SPECS

    def render(self) -> Text:
        r = self.scores
        if not r:
            return Text(self.hint, style="dim")
        names = [s.answer_name for s in self.specs]
        name_w = max(map(len, names), default=0) + 2
        bar_w = max(3, self.content_size.width - name_w - 11)
        out = Text(no_wrap=True)
        for n, (spec, name) in enumerate(zip(self.specs, names)):
            fill, number, word = spec.output.gauge(spec, r)
            out.append(("\n" if n else "") + name.ljust(name_w))
            out.append(text_bar(fill, bar_w), style=spec.color)
            if number:  # "0.93 yes"; a score is its word alone ("3.21 / 5")
                out.append(f" {number} ")
                out.append(word, style="bold")
            else:
                out.append(f" {word}", style="bold")
        return out


class PlaygroundPane(Vertical):
    """Two inputs, the model's status, and the predictions of the three heads."""

    status: reactive[str] = reactive("")
    # The model's first sentence task (shown as bars) and its others; set when the model loads.
    sentence_spec: TaskSpec | None = SENTENCE_SPEC
    other_sentence_specs: tuple = ()

    def __init__(self, run_dir: Path, checkpoint: str | None = None,
                 predictor_factory: Callable[[Path], object] = default_predictor, *, id: str | None = None):
        super().__init__(id=id)
        self.run_dir = Path(run_dir)
        self.checkpoint = checkpoint
        self.follow_run = checkpoint is None  # reload when the run writes a new best/
        self.predictor_factory = predictor_factory
        self.predictor = None
        self.model_info = ""
        self.latency_ms: float | None = None
        self.result: dict | None = None  # the answer on screen
        self.result_for: tuple[str, str | None] | None = None  # ... and the input it answers
        self._loaded_identity = None
        self._offered_identity = None  # the run's checkpoint as last seen by the app's tail
        self._failed_identity = None  # the last one that did not load (said once, not per retry)
        self._loading = False
        self._retry_s = RETRY_S
        self._lock = threading.Lock()  # one forward pass at a time: stale workers wait, then skip
        self._debounce: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Type a sentence…", id="sentence-a")
        yield Input(placeholder="…and a second one to compare the pair (optional)", id="sentence-b")
        yield Static(id="model-status")
        with Horizontal(id="sentiments"):
            yield SentimentBars(id="sentiment-a")
            yield SentimentBars(id="sentiment-b")
        yield PairScores(id="pair-scores")

    def on_mount(self) -> None:
        self.query_one("#sentiment-a").border_title = "sentiment"
        self.query_one("#sentiment-b").border_title = "sentiment of sentence 2"
        self.query_one("#pair-scores").border_title = "pair"
        self.query_one("#sentiment-a", SentimentBars).hint = "Type a sentence above; the heads answer as you type."
        self.query_one("#sentiment-b", SentimentBars).hint = "Type a second sentence to see its sentiment."
        self.query_one("#pair-scores", PairScores).hint = ("With two sentences: paraphrase probability and "
                                                           "similarity (0-5).")
        self.load_model()

    def switch_run(self, run_dir: Path) -> None:
        """Follow another run (a new one the app started): forget the model, load the run's when it has one."""
        self.run_dir = Path(run_dir)
        self.checkpoint, self.follow_run = None, True
        self.predictor, self.model_info, self.latency_ms = None, "", None
        self._loaded_identity = self._offered_identity = self._failed_identity = None
        self._retry_s = RETRY_S
        self._show_result(None)
        self.load_model()

    def watch_status(self, status: str) -> None:
        self.query_one("#model-status", Static).update(status)

    # -- the model -----------------------------------------------------------------------

    def load_model(self) -> None:
        """Load (or reload) the checkpoint in a thread; predictions keep the old model meanwhile."""
        self._loading = True
        if self.predictor is None:
            self.status = "[dim]loading model…[/]"
        self._load_in_thread()

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _load_in_thread(self) -> None:
        from ..errors import UserError

        path = Path(self.checkpoint) if self.checkpoint else self.run_dir
        try:
            for _ in range(LOAD_TRIES):
                before = checkpoint_identity(self.run_dir) if self.follow_run else None
                predictor = self.predictor_factory(path)
                if not self.follow_run or checkpoint_identity(self.run_dir) == before:
                    break
            description = describe_checkpoint(predictor, path)
        except UserError as e:
            self.app.call_from_thread(self._no_model, e.message, checkpoint_identity(self.run_dir))
            return
        except Exception as e:  # a half-written or foreign checkpoint: say so, keep the interface alive
            message = f"could not load the model: {e}"
            self.app.call_from_thread(self._no_model, message, checkpoint_identity(self.run_dir))
            return
        finally:
            self._loading = False
        self.app.call_from_thread(self._model_ready, predictor, before, description)

    def _no_model(self, message: str, identity) -> None:
        if self.follow_run and identity is not None:
            self.set_timer(self._retry_s, self._retry_load)
            self._retry_s = min(self._retry_s * 2, MAX_RETRY_S)
        if self.predictor is not None:
            if identity != self._failed_identity:
                self.notify(message, title="model not reloaded (retrying)", severity="warning")
            self._failed_identity = identity
        elif self.follow_run and identity is None:
            self.status = (f"[yellow]No checkpoint to try yet.[/] [dim]{escape(self.run_dir.name)}/best/ appears "
                           f"after the first dev evaluation; it is loaded as soon as it does.[/]")
        else:
            self.status = f"[red]{escape(message)}[/]"

    def _retry_load(self) -> None:
        if not self._loading and self._offered_identity != self._loaded_identity:
            self.load_model()

    def _model_ready(self, predictor, identity, description: str) -> None:
        self._retry_s = RETRY_S
        self.predictor = predictor
        self._use_tasks(getattr(predictor, "specs", None) or BUILTIN)
        self._loaded_identity = identity
        self.model_info = description
        self._refresh_status()
        self.request_prediction()  # answer what is already typed, with the new model

    def _use_tasks(self, specs) -> None:
        """Draw the loaded model's tasks: its first sentence task as bars, the rest as lines and pair bars."""
        sentence = [s for s in specs if not s.pair]
        self.sentence_spec = sentence[0] if sentence else None
        self.other_sentence_specs = tuple(sentence[1:])
        for bars in self.query(SentimentBars):
            bars.spec = self.sentence_spec or SENTENCE_SPEC
            if self.sentence_spec is not None and self.sentence_spec.name not in {t.name for t in BUILTIN}:
                bars.border_title = self.sentence_spec.title + (" of sentence 2" if bars.id == "sentiment-b" else "")
        self.query_one("#pair-scores", PairScores).specs = tuple(s for s in specs if s.pair)

    def checkpoint_seen(self, identity) -> None:
        """The run offers this checkpoint now; reload when it is not the one loaded."""
        self._offered_identity = identity
        if self.follow_run and identity is not None and identity != self._loaded_identity and not self._loading:
            self.load_model()

    def _refresh_status(self) -> None:
        latency = f" · {self.latency_ms:.0f} ms" if self.latency_ms is not None else ""
        self.status = f"[dim]model[/] {escape(self.model_info)}[dim]{latency}[/]"

    # -- predictions ---------------------------------------------------------------------

    @on(Input.Changed)
    def _typed(self) -> None:
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(DEBOUNCE_S, self.request_prediction)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        if self._debounce is not None:
            self._debounce.stop()
        self.request_prediction()

    def request_prediction(self) -> None:
        """Predict for what the inputs hold now (nothing to do without text or a model)."""
        a = self.query_one("#sentence-a", Input).value.strip()
        b = self.query_one("#sentence-b", Input).value.strip()
        if not a and b:
            a, b = b, ""
        if not a:
            self.workers.cancel_group(self, "predict")  # an answer still on its way is for old text
            self._show_result(None)
            return
        if self.predictor is not None:
            self.ask(a, b or None)

    @work(thread=True, exclusive=True, group="predict", exit_on_error=False)
    def ask(self, a: str, b: str | None) -> None:
        """One forward pass in a thread; a newer request cancels this one's display."""
        worker = get_current_worker()
        with self._lock:
            if worker.is_cancelled:
                return
            t0 = perf_counter()
            try:
                result = self.predictor.sentence(a) if b is None else self.predictor.pair(a, b)
            except Exception as e:  # keep typing possible whatever one input does to the model
                result = {"error": str(e)}
            ms = (perf_counter() - t0) * 1000
        if not worker.is_cancelled:
            self.app.call_from_thread(self._show_result, result, ms, (a, b))

    def _show_result(self, result: dict | None, ms: float | None = None,
                     inputs: tuple[str, str | None] | None = None) -> None:
        sa = self.query_one("#sentiment-a", SentimentBars)
        sb = self.query_one("#sentiment-b", SentimentBars)
        pair = self.query_one("#pair-scores", PairScores)
        if result is not None and "error" in result:
            self.notify(result["error"], title="prediction failed", severity="error")
            return
        if ms is not None:
            self.latency_ms = ms
            self._refresh_status()
        self.result, self.result_for = result, inputs
        spec, others = self.sentence_spec, self.other_sentence_specs
        if result is None:
            sa.answer = sb.answer = pair.scores = None
        elif spec is None:  # a model of pair tasks only
            sa.answer = sb.answer = None
            pair.scores = result if result.keys() & {k for s in pair.specs for k in s.json_keys} else None
        elif spec.json_keys[0] in result:  # one sentence: its answers under the bare keys
            sa.others = tuple((o, result, "") for o in others)
            sa.answer, sb.answer, pair.scores = (result, ""), None, None
        else:
            sa.others = tuple((o, result, "1") for o in others)
            sb.others = tuple((o, result, "2") for o in others)
            sa.answer, sb.answer = (result, "1"), (result, "2")
            pair.scores = result


