"""`bertmtl tui`: the metrics tail, the plot, and the app driven by Textual's pilot.

App tests run the app headless with `App.run_test()` inside `asyncio.run` (no pytest-asyncio
here); snapshot tests pin the layout of both panes with pytest-textual-snapshot.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bertmtl.cli import main
from bertmtl.tui import playground as playground_module
from bertmtl.tui.app import BertmtlApp
from bertmtl.runs.state import RunState
from bertmtl.tui.feed import MetricsTail, format_duration
from bertmtl.tui.lineplot import plot_lines
from bertmtl.tui.monitor import DevTable, RunStatus
from bertmtl.tui.playground import PairScores, SentimentBars
from bertmtl.tui.screens import HelpScreen, QuitScreen

from .fixtures import write_task_data

POLL = 0.02  # the app's poll interval in tests: fast, so waits are short


# -- records ------------------------------------------------------------------------------

CONFIG = {"data_dir": "data", "out": "checkpoints/run-snapshot", "encoder": "minilm", "tasks": ["sst", "para", "sts"],
          "epochs": 3.0, "batch_size": 32, "lr": 5e-05, "schedule": "linear", "warmup": 0.06, "weight_decay": 0.01,
          "optimizer": "adamw", "combine": "pcgrad", "smart": True,
          "smart_weights": {"sst": 0.5, "para": 0.0, "sts": 0.5}, "pooling": "mean", "pair_mode": "bi",
          "sts_loss": "pearson", "max_length": 128, "seed": 42,
          "precision": "fp32", "log_every": 10}


def start_record(total_steps=300, steps_per_epoch=100, **config) -> dict:
    return {"type": "start", "step": 0, "config": {**CONFIG, **config}, "total_steps": total_steps,
            "steps_per_epoch": steps_per_epoch, "examples": {"sst": 8544, "para": 3200, "sts": 6040},
            "dev_examples": {"sst": 1101, "para": 400, "sts": 863}, "skipped": {}, "world_size": 1, "device": "cpu"}


def train_record(step: int, steps_per_epoch=100, t0=1_700_000_000.0) -> dict:
    """Smooth, deterministic losses (so plots and snapshots do not change between runs)."""
    decay = math.exp(-step / 120)
    return {"type": "train", "step": step, "epoch": step / steps_per_epoch, "lr": 5e-5 * (1 - step / 300),
            "loss": {"sst": 1.2 + 0.4 * decay + 0.05 * math.sin(step / 7), "para": 0.35 + 0.3 * decay,
                     "sts": 0.4 + 0.5 * decay + 0.03 * math.cos(step / 5)},
            "smart": {"sst": 0.02 * decay + 0.004, "para": 0.0, "sts": 0.015 * decay + 0.003},
            "examples_per_s": 480.0, "time": t0 + step * 0.2,
            # task-conflict telemetry (mtl/telemetry.py): SST and Quora drift into conflict
            "cos": {"sst-para": 0.3 - 0.4 * (1 - decay), "sst-sts": 0.1 + 0.05 * math.sin(step / 9),
                    "para-sts": 0.45 * decay},
            "conflict": {"sst-para": round(1 - decay, 2), "sst-sts": 0.1, "para-sts": 0.0},
            "grad_norm": {"sst": 2.0 + decay, "para": 1.1, "sts": 3.0 * decay + 0.5},
            "weight": {"sst": 1.1, "para": 1.05 + 0.1 * (1 - decay), "sts": 1.0},
            "conflicting": round(1 - decay, 2) / 3, "update_cos": 0.97 + 0.02 * decay, "update_norm_ratio": 1.02}


def eval_record(step: int, overall: float, best: bool, best_overall: float) -> dict:
    return {"type": "eval", "split": "dev", "step": step, "epoch": step / 100, "sst_acc": overall - 0.1,
            "sst_f1": overall - 0.15, "para_acc": overall + 0.1, "para_f1": overall + 0.08, "sts_corr": overall + 0.05,
            "sts_spearman": overall + 0.04, "overall": overall,
            "sst_n": 1101, "para_n": 400, "sts_n": 863, "best": best, "best_overall": best_overall}


def jsonl(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def snapshot_records() -> list[dict]:
    """A run two thirds done: losses every 10 steps, 10 dev evaluations (more than the table shows)."""
    recs, best = [start_record()], 0.0
    for step in range(10, 201, 10):
        recs.append(train_record(step))
        if step % 20 == 0:
            overall = round(0.5 + 0.1 * math.sin(step / 60), 3)
            recs.append(eval_record(step, overall, overall > best, max(best, overall)))
            best = max(best, overall)
    return recs


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


# -- helpers for the pilot ----------------------------------------------------------------

def drive(app: BertmtlApp, scenario, size=(80, 24)) -> None:
    """Run `scenario(pilot)` against the app, headless."""

    async def go():
        async with app.run_test(size=size) as pilot:
            await scenario(pilot)

    asyncio.run(go())


async def until(pilot, condition, timeout: float = 15.0, what: str = "condition") -> None:
    """Let the app run until `condition()` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


class FakePredictor:
    """Fixed answers, for snapshots that must not depend on trained weights."""

    def __init__(self, path):
        self.path = Path(path) / "best"
        self.metrics = {"overall": 0.612}

    def sentence(self, text):
        return {"sentiment": {"label": "somewhat positive", "index": 3,
                              "probabilities": [0.04, 0.11, 0.20, 0.45, 0.20]}}

    def pair(self, a, b):
        return {"sentiment1": self.sentence(a)["sentiment"],
                "sentiment2": {"label": "neutral", "index": 2, "probabilities": [0.10, 0.15, 0.40, 0.25, 0.10]},
                "paraphrase_prob": 0.83, "is_paraphrase": True, "similarity": 3.62}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Torch as `run_tui` sets it up (one thread), restored for the other test modules."""
    from bertmtl.tui.app import PLAYGROUND_THREADS

    threads = torch.get_num_threads()
    torch.set_num_threads(PLAYGROUND_THREADS)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained_run(tiny_bert_dir, tmp_path_factory) -> Path:
    """A tiny model trained for one epoch (a few seconds on CPU)."""
    data = write_task_data(tmp_path_factory.mktemp("tui-data"))
    run = tmp_path_factory.mktemp("tui-run") / "run1"
    r = CliRunner().invoke(main, ["train", "--pretrained", str(tiny_bert_dir), "--data-dir", str(data), "--out",
                                  str(run), "--epochs", "1", "--batch-size", "16", "--lr", "1e-3", "--seed", "0"])
    assert r.exit_code == 0, r.output
    return run


# -- the tail and the state (no app) ------------------------------------------------------

def test_tail_skips_garbage_and_waits_for_the_end_of_a_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.poll().records == []  # no file yet: nothing, no error
    path.write_text(jsonl([start_record()]) + "this is not json\n{\"type\": \"train\", \"st")
    first = tail.poll()
    assert [r["type"] for r in first.records] == ["start"]
    append(path, "ep\": 10, \"loss\": {\"sst\": 1.5}, \"time\": 1.0}\n")
    second = tail.poll()
    assert second.records == [{"type": "train", "step": 10, "loss": {"sst": 1.5}, "time": 1.0}]
    assert tail.poll().records == []  # read once


def test_tail_rereads_a_replaced_or_truncated_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(jsonl([start_record(), train_record(10), train_record(20)]))
    tail = MetricsTail(path)
    assert len(tail.poll().records) == 3
    path.write_text(jsonl([start_record()]))  # shorter than what was read: a new file
    poll = tail.poll()
    assert poll.reset and [r["type"] for r in poll.records] == ["start"]


def test_state_progress_eta_and_best():
    state = RunState()
    state.apply([start_record(), train_record(10), train_record(20), {"type": "train", "step": "bad"},
                 eval_record(20, 0.5, True, 0.5), eval_record(30, 0.4, False, 0.5)])
    assert state.step == 20 and state.total_steps == 300 and state.fraction == pytest.approx(20 / 300)
    # 10 steps per 2 s -> 280 steps left take 56 s.
    assert state.eta_seconds == pytest.approx(56.0)
    assert format_duration(state.eta_seconds) == "56s" and format_duration(3725) == "1h 02m"
    assert state.best_step == 20 and [e["step"] for e in state.evals] == [20, 30]
    assert state.loss["sst"][-1] == (20, pytest.approx(train_record(20)["loss"]["sst"]))


def test_state_resume_drops_points_after_the_saved_step():
    state = RunState()
    state.apply([start_record(), train_record(10), train_record(20), train_record(30), eval_record(30, 0.5, True, 0.5)])
    state.apply([{**start_record(), "type": "resume", "step": 20}, train_record(30)])
    assert [x for x, _ in state.loss["sst"]] == [10, 20, 30]
    assert state.evals == [] and state.best_step is None and state.status == "running"


def test_training_seconds_leave_out_the_time_a_run_lay_stopped():
    state = RunState()
    assert state.training_seconds is None
    t = 1_700_000_000.0
    state.apply([{**start_record(), "time": t}, {**train_record(10), "time": t + 30}, {**train_record(20), "time": t + 50}])
    assert state.training_seconds == pytest.approx(50.0)
    # Killed after 50 s, resumed an hour later, 20 s more: 70 s of training, not 3670.
    state.apply([{**start_record(), "type": "resume", "step": 10, "time": t + 3650},
                 {**train_record(20), "time": t + 3670}])
    assert state.training_seconds == pytest.approx(70.0) and state.started == t


def test_plot_fits_its_size_and_draws_every_series():
    series = {"sst": [(s, 1 + 1 / s) for s in range(1, 200)], "para": [(s, 0.5) for s in range(1, 200)]}
    for width, height in ((30, 6), (80, 12), (200, 50)):
        lines = plot_lines(series, {"sst": "red", "para": "blue"}, width, height)
        assert len(lines) == height
        assert all(line.cell_len <= width for line in lines)
        assert any(0x2800 < ord(ch) <= 0x28FF for ch in lines[0].plain)  # braille on the top row: the max
        assert "sst" in lines[-1].plain and "para" in lines[-1].plain  # the legend
        assert lines[-2].plain.rstrip().endswith("199")  # x axis: last step
    empty = plot_lines({}, {}, 30, 6, empty="waiting")
    assert "waiting" in "".join(line.plain for line in empty)


# -- the app: monitor ---------------------------------------------------------------------

def test_appended_records_update_the_plots_and_the_table(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    metrics = run / "metrics.jsonl"
    metrics.write_text(jsonl([start_record(), train_record(10), train_record(20)]))
    from bertmtl.runs.rundir import WriterLock

    writer = WriterLock(run)  # as a training process holds it
    app = BertmtlApp(run, poll_interval=POLL, predictor_factory=FakePredictor)

    async def scenario(pilot):
        loss = app.query_one("#loss-plot")
        smart = app.query_one("#smart-plot")
        table = app.query_one(DevTable)
        await until(pilot, lambda: len(loss.series.get("sst", [])) == 2, what="the first train records")
        assert [x for x, _ in loss.series["para"]] == [10, 20]
        assert set(smart.series) == {"sst", "sts"}  # para's SMART weight is 0: no line for it
        assert table.row_count == 0

        append(metrics, jsonl([train_record(30), eval_record(30, 0.55, True, 0.55)]))
        await until(pilot, lambda: table.row_count == 1, what="the eval row")
        assert loss.series["sst"][-1] == (30, pytest.approx(train_record(30)["loss"]["sst"]))
        assert [str(c) for c in table.get_row_at(0)] == ["★", "30", "0.550", "0.450", "0.650", "0.600", "0.400", "0.630",
                                                            "0.590"]

        append(metrics, jsonl([train_record(40), eval_record(40, 0.60, True, 0.60), train_record(50),
                               eval_record(50, 0.58, False, 0.60)]))
        await until(pilot, lambda: table.row_count == 3, what="two more eval rows")
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(3)]
        assert [r[1] for r in rows] == ["50", "40", "30"]  # newest first
        assert [r[0] for r in rows] == ["", "★", ""]  # the star moved to the new best
        assert len(loss.series["sst"]) == 5
        progress = app.query_one(RunStatus).progress
        assert (progress.step, progress.total_steps, progress.status) == (50, 300, "running")
        assert progress.eta == "50s"  # 250 steps at 5 steps/s
        # the dev-score and learning-rate curves
        assert app.query_one("#dev-plot").series["overall"] == [(30, 0.55), (40, 0.60), (50, 0.58)]
        assert app.query_one("#lr-plot").series["lr"][-1] == (50, pytest.approx(5e-5 * (1 - 50 / 300)))
        # The writer goes away without an end record: crashed, and how to go on.
        writer.release()
        await until(pilot, lambda: app.query_one(RunStatus).progress.status == "crashed", what="crashed")
        assert "bertmtl train --resume" in app.query_one(RunStatus).progress.note

    drive(app, scenario)


@pytest.mark.slow
def test_a_broken_metrics_file_is_survived(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    metrics = run / "metrics.jsonl"
    app = BertmtlApp(run, poll_interval=POLL, predictor_factory=FakePredictor)

    async def scenario(pilot):
        loss = app.query_one("#loss-plot")
        await pilot.pause(0.1)
        assert app.query_one(RunStatus).progress is None  # no file yet: waiting
        metrics.write_text(jsonl([start_record(), train_record(10)]) + "\x00garbage{{\n" + '["a list"]\n'
                           + '{"type": "train", "step": "x"}\n' + '{"type": "train", "step": 20, "loss": {"sst"')
        await until(pilot, lambda: len(loss.series.get("sst", [])) == 1, what="the good records")
        await pilot.pause(0.1)
        assert len(loss.series["sst"]) == 1  # the truncated line is not read yet
        append(metrics, ': 1.0, "para": 0.5, "sts": 0.7}, "time": 1700000004.0}\n')
        await until(pilot, lambda: len(loss.series["sst"]) == 2, what="the completed line")
        assert loss.series["sst"][-1] == (20, 1.0)
        await pilot.pause(0.1)
        assert len(loss.series["sst"]) == 2  # once
        metrics.write_text(jsonl([start_record()]))  # replaced by a new file: start again
        await until(pilot, lambda: not loss.series.get("sst"), what="the reset")
        assert app.is_running

    drive(app, scenario)


# -- the app: training started by the TUI --------------------------------------------------

FAKE_TRAINING = r"""
import json, pathlib, signal, sys, time
run = pathlib.Path(sys.argv[1])
run.mkdir(parents=True, exist_ok=True)  # the TUI made it for train.log
log = open(run / "metrics.jsonl", "a")
def write(rec):
    log.write(json.dumps(rec) + "\n"); log.flush()
stop = []
signal.signal(signal.SIGINT, lambda *a: stop.append(a[0]))
write({"type": "start", "step": 0, "config": {"epochs": 1}, "total_steps": 100000, "steps_per_epoch": 100000})
step = 0
while not stop and step < 2000:
    step += 1
    write({"type": "train", "step": step, "epoch": step / 100000, "loss": {"sst": 1.0 / step}, "time": time.time()})
    time.sleep(0.02)
time.sleep(3.0)  # saving the checkpoint (long enough to see the "stopping" state on a busy machine)
(run / "last").mkdir()
print(f"stopped at step {step}; checkpoint saved", flush=True)
write({"type": "end", "status": "stopped", "step": step, "best_overall": None})
"""


def fake_training(run: Path) -> list[str]:
    return [sys.executable, "-c", FAKE_TRAINING, str(run)]


@pytest.mark.slow
def test_s_stops_the_training_cleanly(tmp_path):
    run = tmp_path / "runs" / "new"
    app = BertmtlApp(run, train_argv=fake_training(run), poll_interval=POLL, predictor_factory=FakePredictor)

    async def scenario(pilot):
        status = app.query_one(RunStatus)
        await until(pilot, lambda: app.state.step >= 3, what="training to start")
        assert app.check_action("stop_training", ()) is True
        await pilot.press("s")
        assert app.training.stopping
        assert app.check_action("stop_training", ()) is None  # greyed out while it saves
        assert status.progress.status == "stopping"
        await until(pilot, lambda: app.state.status == "stopped" and app.training.returncode is not None,
                    what="training to stop")
        assert app.training.returncode == 0
        await until(pilot, lambda: "Resume with: bertmtl train --resume" in status.progress.note, what="the note")
        assert str(run) in status.progress.note
        assert app.check_action("stop_training", ()) is False  # hidden: nothing left to stop
        assert app.is_running

    drive(app, scenario)
    assert (run / "last").is_dir()
    assert "checkpoint saved" in (run / "train.log").read_text()


@pytest.mark.slow
def test_quitting_asks_and_stops_the_training(tmp_path):
    run = tmp_path / "new"
    app = BertmtlApp(run, train_argv=fake_training(run), poll_interval=POLL, predictor_factory=FakePredictor)

    async def scenario(pilot):
        await until(pilot, lambda: app.state.step >= 1, what="training to start")
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, QuitScreen), what="the question")
        assert app.is_running
        await pilot.press("s")  # stop it, then quit
        await until(pilot, lambda: not app.is_running, what="the app to close")

    drive(app, scenario)
    assert app.training.returncode == 0
    assert app.state.status == "stopped" or "stopped" in (run / "metrics.jsonl").read_text()


def test_a_failing_training_is_explained(tmp_path):
    run = tmp_path / "new"
    argv = [sys.executable, "-c", "import sys; print('Error: data/ids-sst-train.csv: no such file'); sys.exit(2)"]
    app = BertmtlApp(run, train_argv=argv, poll_interval=POLL, predictor_factory=FakePredictor)

    async def scenario(pilot):
        status = app.query_one(RunStatus)
        await until(pilot, lambda: status.progress is not None and status.progress.status == "failed",
                    what="the failure")
        assert "code 2" in status.progress.note and "no such file" in status.progress.note

    drive(app, scenario)


# -- the app: keys ------------------------------------------------------------------------

@pytest.mark.slow
def test_tab_crosses_panes_and_keys_work(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    app = BertmtlApp(run, poll_interval=POLL, predictor_factory=FakePredictor)

    async def scenario(pilot):
        from textual.widgets import TabbedContent

        tabs = app.query_one(TabbedContent)
        seen = []
        for _ in range(6):
            seen.append((tabs.active, app.focused.id))
            await pilot.press("tab")
            await pilot.pause()
        assert seen == [("monitor", "dev-table"), ("monitor", "config-box"), ("playground", "sentence-a"),
                        ("playground", "sentence-b"), ("conflicts", "conflict-summary"), ("log", "log-view")]
        assert (tabs.active, app.focused.id) == ("monitor", "dev-table")
        await pilot.press("shift+tab")
        await pilot.pause()
        assert (tabs.active, app.focused.id) == ("log", "log-view")
        await pilot.press("shift+tab", "shift+tab")
        await pilot.pause()
        assert (tabs.active, app.focused.id) == ("playground", "sentence-b")
        await pilot.press("escape", "m")
        await pilot.pause()
        assert tabs.active == "monitor"
        await pilot.press("p")
        await pilot.pause()
        assert (tabs.active, app.focused.id) == ("playground", "sentence-a")
        await pilot.press("escape", "c")
        await pilot.pause()
        assert (tabs.active, app.focused.id) == ("conflicts", "conflict-summary")
        theme = app.theme
        await pilot.press("t")
        assert app.theme != theme
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        assert app.check_action("stop_training", ()) is False  # no training of ours: hidden
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, what="q to quit")

    drive(app, scenario)


# -- the app: playground ------------------------------------------------------------------

async def type_a_sentence(app, pilot, text: str):
    """Open the playground, type `text`, wait for its answer; the sentiment bars show the
    predictor's own answer for it. Returns (the bars, that answer)."""
    play = app.playground
    await pilot.press("p")
    await until(pilot, lambda: play.predictor is not None, what="the model to load")
    await pilot.press(*text)
    # A pause while typing may show the answer for a prefix first: wait for the whole sentence.
    await until(pilot, lambda: play.result_for == (text, None), what="a prediction")
    sa = app.query_one("#sentiment-a", SentimentBars)
    expected = play.predictor.sentence(text)["sentiment"]
    res, suffix = sa.answer
    assert res[sa.spec.json_keys[0] + suffix] == expected
    return sa, expected


@pytest.mark.slow
def test_typing_a_sentence_shows_the_sentiment(trained_run):
    app = BertmtlApp(trained_run, poll_interval=POLL)

    async def scenario(pilot):
        sa, expected = await type_a_sentence(app, pilot, "the movie is very good")
        play = app.playground
        assert expected["label"] in sa.render().plain
        assert "run1/best" in play.status
        await pilot.press("tab", *"the film is bad")
        pair = app.query_one("#pair-scores", PairScores)
        await until(pilot, lambda: play.result_for == ("the movie is very good", "the film is bad"),
                    what="a pair prediction")
        assert pair.scores["similarity"] == pytest.approx(
            play.predictor.pair("the movie is very good", "the film is bad")["similarity"])
        assert "/ 5" in pair.render().plain
        assert play.latency_ms is not None and play.latency_ms >= 0  # its time: benchmarks/playground_latency.py

    drive(app, scenario)


@pytest.mark.slow
def test_the_playground_waits_for_the_first_checkpoint(trained_run, tmp_path):
    import shutil

    run = tmp_path / "young"
    run.mkdir()
    app = BertmtlApp(run, poll_interval=POLL)

    async def scenario(pilot):
        play = app.playground
        await until(pilot, lambda: "No checkpoint to try yet" in play.status, what="the explanation")
        # best/ appears, but not all at once (copied by hand, or a slow shared disk): the first
        # load fails, and is tried again until the files are complete.
        (run / "best").mkdir()
        shutil.copy2(trained_run / "best" / "bertmtl.json", run / "best")
        await until(pilot, lambda: "incomplete checkpoint" in play.status, what="the incomplete checkpoint")
        for f in (trained_run / "best").iterdir():
            shutil.copy2(f, run / "best")
        await until(pilot, lambda: play.predictor is not None, what="the model to load")
        assert "young/best" in play.status

    drive(app, scenario)


# -- snapshots ----------------------------------------------------------------------------

# Writer locks of the snapshot runs, held to the end of the session: a run being trained has a
# live writer (without one, the TUI rightly shows a run with no end record as crashed).
WRITERS = []


def snapshot_run(tmp_path: Path) -> Path:
    from bertmtl.runs.rundir import WriterLock

    run = tmp_path / "run-snapshot"  # the name shows in the header: fixed, like the records
    run.mkdir()
    (run / "metrics.jsonl").write_text(jsonl(snapshot_records()))
    WRITERS.append(WriterLock(run))
    return run


async def settle(pilot) -> None:
    """What a snapshot must not catch mid-way: a focused input's cursor blinks every 0.5 s and the tab
    underline slides, so on a loaded machine a fixed pause can end on either frame."""
    from textual.widgets import Input

    for field in pilot.app.query(Input):
        field.cursor_blink = False  # the cursor stays drawn
    await pilot.wait_for_scheduled_animations()
    await pilot.pause(0.1)


def wait_for_records(app: BertmtlApp, n: int):
    async def run_before(pilot):
        await until(pilot, lambda: app.state.records == n, what="the snapshot records")
        await settle(pilot)

    return run_before


@pytest.mark.slow
def test_snapshot_monitor(snap_compare, tmp_path):
    app = BertmtlApp(snapshot_run(tmp_path), poll_interval=POLL, predictor_factory=FakePredictor)
    assert snap_compare(app, terminal_size=(80, 24), run_before=wait_for_records(app, len(snapshot_records())))


@pytest.mark.slow
def test_snapshot_monitor_large_light(snap_compare, tmp_path):
    app = BertmtlApp(snapshot_run(tmp_path), poll_interval=POLL, predictor_factory=FakePredictor)

    async def run_before(pilot):
        await wait_for_records(app, len(snapshot_records()))(pilot)
        await pilot.press("t")
        await settle(pilot)

    assert snap_compare(app, terminal_size=(140, 44), run_before=run_before)


@pytest.mark.slow
def test_snapshot_conflicts(snap_compare, tmp_path):
    """The heat map of the last record (SST and Quora in conflict, red) and the pairs' curves."""
    app = BertmtlApp(snapshot_run(tmp_path), poll_interval=POLL, predictor_factory=FakePredictor)

    async def run_before(pilot):
        await wait_for_records(app, len(snapshot_records()))(pilot)
        await pilot.press("c")
        await settle(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_conflict_series_follow_resume_and_the_records():
    state = RunState()
    state.apply(snapshot_records())
    assert set(state.cos_series) == {"sst-para", "sst-sts", "para-sts"} and len(state.cos_series["sst-para"]) == 20
    assert state.cos_series["sst-para"][-1] == (200, pytest.approx(train_record(200)["cos"]["sst-para"]))
    state.apply([{"type": "resume", "step": 150, "config": CONFIG, "total_steps": 300}])
    assert state.cos_series["sst-para"][-1][0] == 150 and state.telemetry[-1]["step"] == 150


def test_heat_map_shows_loss_weights():
    """Under --loss-weighting the heat map gains each task's loss weight; without one it has none."""
    from rich.console import Console

    from bertmtl.tui.conflicts import heat_map

    def text(record):
        console = Console(record=True, width=100)
        console.print(heat_map(record, ["sst", "para"]))
        return console.export_text()

    rec = {"cos": {"sst-para": -0.25}, "grad_norm": {"sst": 2.0, "para": 1.0}, "weight": {"sst": 1.0, "para": 1.0}}
    assert "loss w" not in text(rec) and "-0.25" in text(rec)
    shown = text({**rec, "loss_weight": {"sst": 0.375, "para": 1.625}})
    assert "loss w" in shown and "0.375" in shown and "1.62" in shown
    # the plain sum with a weighting has loss weights but no gradient statistics: still a table of its tasks
    assert "0.375" in text({"loss_weight": {"sst": 0.375, "para": 1.625}})


@pytest.mark.slow
def test_snapshot_playground(snap_compare, tmp_path, monkeypatch):
    monkeypatch.setattr(playground_module, "perf_counter", lambda: 0.0)  # latency shows as 0 ms
    app = BertmtlApp(snapshot_run(tmp_path), poll_interval=POLL, predictor_factory=FakePredictor)

    async def run_before(pilot):
        await wait_for_records(app, len(snapshot_records()))(pilot)
        await pilot.press("p", *"a gorgeous, witty film", "tab", *"a witty film", "enter")
        await until(pilot, lambda: app.playground.result_for == ("a gorgeous, witty film", "a witty film"),
                    what="the pair prediction")
        await settle(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_cosines_are_drawn_on_a_scale_that_fits_them():
    """Gradients of different tasks over millions of parameters are nearly orthogonal: a real run's
    cosines are hundredths, which a -1..1 scale would show as +0.00, all one colour."""
    from bertmtl.sweep.pictures import cosine_fill, cosine_scale, cosine_text

    assert cosine_scale([-0.004, 0.0141]) == 0.02 and cosine_scale([0.3]) == 0.5 and cosine_scale([]) == 0.01
    assert cosine_text(-0.0041, 0.01) == "-0.004" and cosine_text(0.42, 0.5) == "+0.42"
    assert cosine_fill(-0.01, 0.01) == "rgb(190,30,30)" and cosine_fill(0.005, 0.01) == "rgb(30,115,40)"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["roberta", "deberta-v3"])
def test_the_playground_answers_for_other_families(family, small_data_dir, tmp_path):
    """The monitor and playground of a run of another family (its own tokenizer, DeBERTa's attention)."""
    from .families import write_tiny_family

    enc = write_tiny_family(tmp_path / "enc", family)
    run = tmp_path / "run1"
    r = CliRunner().invoke(main, ["train", "--encoder", str(enc), "--data-dir", str(small_data_dir), "--out",
                                  str(run), "--max-steps", "2", "--batch-size", "8", "--seed", "0"])
    assert r.exit_code == 0, r.output
    app = BertmtlApp(run, poll_interval=POLL)

    async def scenario(pilot):
        await type_a_sentence(app, pilot, "the movie is very good")
        assert app.playground.predictor.tokenizer.model_type == ("deberta-v2" if family.startswith("deberta") else family)

    drive(app, scenario)


# -- the app: the real `bertmtl tui --train` ---------------------------------------------------

def tui_app_of(monkeypatch, *args) -> BertmtlApp:
    """The app `bertmtl ARGS` builds, parsed by the real command (its run() held, for the pilot)."""
    made = []
    monkeypatch.setattr(BertmtlApp, "run", lambda self, *a, **k: made.append(self))
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    (app,) = made
    app.poll_interval = POLL
    return app


@pytest.mark.slow
def test_tui_train_trains_the_real_command_to_a_finished_run(small_data_dir, tmp_path, monkeypatch):
    """`bertmtl tui --train ... --max-steps 6 --dev-limit 20`: the real `bertmtl train` child trains to
    `finished` in the run directory the TUI made (its console log beside), the status line follows
    every step between the log's records, and the playground answers from the run's best/."""
    from .conftest import write_tiny_bert

    # Steps of a few tenths of a second, so that steps between two records are seen.
    encoder = write_tiny_bert(tmp_path / "bert", hidden_size=256, intermediate_size=1024, num_hidden_layers=4)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    app = tui_app_of(monkeypatch, "tui", "--train", "--data-dir", small_data_dir, "--encoder", encoder,
                     "--max-steps", 6, "--dev-limit", 20, "--batch-size", 32, "--runs-dir", tmp_path / "runs")
    assert app.run_dir.parent == tmp_path / "runs" and app.training.argv[-2:] == ["--out", str(app.run_dir)]
    seen = []

    async def scenario(pilot):
        status = app.query_one(RunStatus)

        def finished() -> bool:
            p = status.progress
            if p is not None and app.state.status == "running":
                seen.append((p.step, app.state.step, p.eta))
            return app.state.status == "finished" and app.training.returncode is not None

        await until(pilot, finished, timeout=240, what="the training to finish")
        assert app.training.returncode == 0, app.training.log_tail(20)
        assert status.progress.status == "finished" and status.progress.step == 6
        assert status.progress.note == ""
        await pilot.press("l")
        await until(pilot, lambda: app.query_one("LogPane").lines > 0, what="the run's messages")
        sa, expected = await type_a_sentence(app, pilot, "the movie is very good")
        assert app.playground.predictor.path == app.run_dir / "best"

    drive(app, scenario, size=(120, 36))
    assert app.state.best_step is not None
    # The status line moved on between records (logged at step 6 only: --log-every 10), with an ETA.
    between = [(step, eta) for step, logged, eta in seen if logged < step < 6]
    assert between and any(eta != "–" for _, eta in between), seen
    assert json.loads((app.run_dir / "summary.json").read_text())["status"] == "finished"
    assert "training for 6 steps" in (app.run_dir / "train.log").read_text()


@pytest.mark.slow
def test_n_starts_a_new_run_from_inside(small_data_dir, tiny_bert_dir, tmp_path, monkeypatch):
    """`n` in a TUI watching a finished run: the form holds the command line's train options; a bad
    option is refused in the form; Enter starts `bertmtl train` in a new run, which the app follows."""
    from bertmtl.tui.screens import NewRunScreen

    trained = tmp_path / "runs" / "old"
    cli_args = ["--data-dir", str(small_data_dir), "--encoder", str(tiny_bert_dir), "--max-steps", "3",
                "--dev-limit", "8", "--batch-size", "8"]
    r = CliRunner().invoke(main, ["train", *cli_args, "--out", str(trained)])
    assert r.exit_code == 0, r.output
    app = tui_app_of(monkeypatch, "tui", trained, *cli_args, "--runs-dir", tmp_path / "runs")
    assert app.training is None

    async def scenario(pilot):
        await until(pilot, lambda: app.state.status == "finished", what="the old run")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NewRunScreen), what="the form")
        field = app.screen.query_one("#new-run-args")
        assert field.value.startswith("--data-dir ")
        field.value += " --lrr 3"
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, NewRunScreen)  # refused, with the reason
        assert "No such option '--lrr'" in str(app.screen.query_one("#new-run-error").render())
        field.value = field.value.replace(" --lrr 3", " --lr 1e-3")
        await pilot.press("enter")
        await until(pilot, lambda: app.run_dir != trained, what="the new run")
        await until(pilot, lambda: app.state.status == "finished" and app.training.returncode == 0, timeout=180,
                    what="the new run to finish")

    drive(app, scenario, size=(120, 36))
    assert app.run_dir.parent == tmp_path / "runs"
    assert json.loads((app.run_dir / "train_args.json").read_text())["lr"] == 1e-3


def test_tui_train_refuses_a_directory_that_holds_a_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    r = CliRunner().invoke(main, ["tui", "--train", "--out", str(run)])
    assert r.exit_code == 2 and "already holds a run" in r.output and "bertmtl train --resume" in r.output


@pytest.mark.slow
def test_s_while_the_run_is_set_up_says_nothing_was_saved(small_data_dir, tiny_bert_dir, tmp_path, monkeypatch):
    """`s` before the real `bertmtl train` child has trained a step: it ends at once (exit 130) and
    the TUI says that nothing was saved, not how to resume a checkpoint that does not exist."""
    app = tui_app_of(monkeypatch, "tui", "--train", "--data-dir", small_data_dir, "--encoder", tiny_bert_dir,
                     "--max-steps", 3, "--runs-dir", tmp_path / "runs")

    async def scenario(pilot):
        status = app.query_one(RunStatus)
        await until(pilot, lambda: app.training.running, what="the child")
        await pilot.pause(0.5)  # in its imports or its set-up: no step yet
        await pilot.press("s")
        await until(pilot, lambda: app.training.returncode is not None, timeout=60, what="the child to end")
        assert app.training.returncode == 130, app.training.log_tail(10)
        await until(pilot, lambda: status.progress is not None and status.progress.status == "stopped",
                    what="the note")
        assert "nothing was trained or saved" in status.progress.note
        assert app._exit_message(130) == "training stopped while it was being set up; nothing was trained or saved"
        assert not (app.run_dir / "last").exists() and "Traceback" not in (app.run_dir / "train.log").read_text()

    drive(app, scenario)
    # Nothing of it was a run: the directory goes with the TUI, rather than staying to refuse the same --out.
    assert not app.run_dir.exists() and app.discarded and str(app.run_dir) in app.discarded


def test_tui_refuses_what_train_would_refuse_and_what_is_not_a_run(tmp_path, small_data_dir):
    runner = CliRunner()
    r = runner.invoke(main, ["tui", "--train", "--data-dir", str(tmp_path / "nowhere"), "--runs-dir",
                             str(tmp_path / "runs")])
    assert r.exit_code == 2 and "data directory" in r.output and "not found" in r.output
    r = runner.invoke(main, ["tui", "--train", "--data-dir", str(small_data_dir), "--cagrad-c", "0.5",
                             "--runs-dir", str(tmp_path / "runs")])
    assert r.exit_code == 2 and "--cagrad-c 0.5 applies to --combine cagrad only" in r.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    (tmp_path / "empty").mkdir()
    r = runner.invoke(main, ["tui", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "not a run (no metrics.jsonl" in r.output


def test_the_new_run_form_checks_the_options_as_train_would(tmp_path, small_data_dir):
    from bertmtl.errors import UserError
    from bertmtl.tui.training import plan_training

    for args, message in [(["--print-config"], "--print-config prints a configuration"),
                          (["--out", "x"], "leave out --out and --resume"),
                          (["--data-dir", str(tmp_path)], "ids-sst-train.csv: no such file"),
                          (["--data-dir", str(small_data_dir), "--encoder", "org/name@"], "the revision after @ is empty"),
                          (["--data-dir", str(small_data_dir), "--encoder", ""], "--encoder must not be empty"),
                          (["--lr", "abc"], "'abc' is not a valid float")]:
        with pytest.raises(UserError, match=message.replace("(", r"\(")):
            plan_training(args)
    assert plan_training(["--data-dir", str(small_data_dir), "--runs-dir", str(tmp_path / "r")]).runs_dir == \
        str(tmp_path / "r")


@pytest.mark.slow
def test_a_training_that_fails_before_it_is_a_run_leaves_no_directory(tmp_path, tiny_bert_dir, small_data_dir):
    """The child fails loading its encoder (after the TUI's checks): the TUI says why, and on closing
    removes the directory that holds nothing but its log (nothing lists or deletes it)."""
    run = tmp_path / "runs" / "new"
    run.mkdir(parents=True)
    app = BertmtlApp(run, poll_interval=POLL, predictor_factory=FakePredictor, start_training=True,
                     train_args=["--data-dir", str(small_data_dir), "--encoder", str(tmp_path / "no-encoder")])

    async def scenario(pilot):
        status = app.query_one(RunStatus)
        await until(pilot, lambda: status.progress is not None and status.progress.status == "failed", timeout=60,
                    what="the failure")
        assert "no-encoder" in status.progress.note

    drive(app, scenario)
    assert not run.exists() and "no-encoder" in app.discarded


@pytest.mark.slow
def test_sigterm_closes_the_app_and_stops_its_training(tmp_path):
    import os
    import signal

    run = tmp_path / "new"
    app = BertmtlApp(run, train_argv=fake_training(run), poll_interval=POLL, predictor_factory=FakePredictor)

    async def scenario(pilot):
        await until(pilot, lambda: app.state.step >= 1, what="training to start")
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill` sends it to the TUI
        await until(pilot, lambda: not app.is_running, what="the app to close")

    drive(app, scenario)
    assert app.training.stopping and app.return_value is None
    app.training.proc.wait(30)
    assert "stopped" in (run / "metrics.jsonl").read_text()
