"""Your own tasks: --task flags and tasks files, column guessing, label names from the data,
CSV / TSV / JSONL with the CS224N readers' row validation, and 1, 2 and 4 declared tasks
through train, evaluate, resume and predict (the CLI as `python -m bertmtl`)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch

from bertmtl.data.batching import RoundRobin, TaskDataset
from bertmtl.tasks.files import read_task_file
from bertmtl.errors import UserError
from bertmtl.inference.evaluate import spearman_rho, task_metrics
from bertmtl.tasks import METRIC_SHORT, TaskSpec
from bertmtl.runs.state import RunState
from bertmtl.tasks.declared import build_spec, declared_specs, parse_task_flag, read_tasks_file

from .conftest import command
from .fixtures import NEG, POS, TOPICS

REPO = Path(__file__).resolve().parents[1]


def _write_csv(path: Path, header, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def _write_jsonl(path: Path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _review(rng, positive: bool) -> str:
    return " ".join(rng.choice(POS if positive else NEG) for _ in range(3)) + " movie"


def _pair(rng, same: bool) -> tuple[str, str]:
    t1 = rng.randrange(len(TOPICS))
    t2 = t1 if same else (t1 + 1) % len(TOPICS)
    return " ".join(rng.choice(TOPICS[t1]) for _ in range(4)), " ".join(rng.choice(TOPICS[t2]) for _ in range(4))


def intents_rows(n, rng):
    """Three intents, comma-separated, no id column."""
    out = []
    for _ in range(n):
        k = rng.randrange(3)
        text = ["hello there", "bye now", "how do i learn python"][k] + " " + rng.choice(["a", "the", "one"])
        out.append([text, ["greet", "bye", "ask"][k]])
    return out


def write_task_files(d: Path, n: int = 40, seed: int = 0) -> dict[str, str]:
    """One file pair per kind, each in another format; returns --task values by name."""
    rng = random.Random(seed)
    d.mkdir(parents=True, exist_ok=True)
    flags = {}
    for split, m in (("train", n), ("dev", n // 2)):
        _write_csv(d / f"intents-{split}.csv", ["text", "intent"], intents_rows(m, rng))
        rows = []
        for i in range(m):
            same = rng.random() < 0.5
            a, b = _pair(rng, same)
            rows.append([f"p{i}", a, b, "yes" if same else "no"])
        _write_csv(d / f"dupes-{split}.tsv", ["id", "question1", "question2", "is_duplicate"], rows, "\t")
        rows = []
        for i in range(m):
            same = rng.random() < 0.5
            a, b = _pair(rng, same)
            rows.append({"id": i, "sentence1": a, "sentence2": b, "score": round(rng.uniform(7, 10) if same
                                                                                 else rng.uniform(1, 4), 1)})
        _write_jsonl(d / f"scores-{split}.jsonl", rows)
        _write_csv(d / f"reviews-{split}.csv", ["review", "label"],
                   [[_review(rng, p), "1" if p else "0"] for p in (rng.random() < 0.5 for _ in range(m))])
    flags["intents"] = f"intents:classification:{d / 'intents-train.csv'}:{d / 'intents-dev.csv'}"
    flags["dupes"] = f"dupes:pair-classification:{d / 'dupes-train.tsv'}:{d / 'dupes-dev.tsv'}"
    flags["scores"] = f"scores:pair-regression:{d / 'scores-train.jsonl'}:{d / 'scores-dev.jsonl'}"
    flags["reviews"] = f"reviews:classification:{d / 'reviews-train.csv'}:{d / 'reviews-dev.csv'}"
    return flags


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("own")
    return d, write_task_files(d)


# -- declaring ---------------------------------------------------------------------------------

def test_task_flag_syntax():
    assert parse_task_flag("a:classification:t.csv") == {"name": "a", "kind": "classification", "train": "t.csv"}
    assert parse_task_flag("s:pair-regression[0,5]:t.csv:d.csv") == {
        "name": "s", "kind": "pair-regression", "train": "t.csv", "dev": "d.csv", "range": [0.0, 5.0]}
    assert parse_task_flag("s:pair-regression[-1-1]:t.csv")["range"] == [-1.0, 1.0]
    for bad, message in (("a:classification", "NAME:KIND:TRAIN"), ("a:ranking:t.csv", "kind 'ranking'"),
                         ("sst:classification:t.csv", "built-in"), ("A:classification:t.csv", "lower-case"),
                         ("a:classification[0,1]:t.csv", "only regression"), ("a:regression[5,1]:t.csv", "low < high")):
        with pytest.raises(ValueError, match=message):
            parse_task_flag(bad)


def test_one_spec_of_each_kind_from_the_data(task_files):
    d, flags = task_files
    intents, dupes, scores, reviews = declared_specs([flags[k] for k in ("intents", "dupes", "scores", "reviews")],
                                                     None)
    # Columns guessed, labels read and sorted, no id column: examples numbered by line.
    assert (intents.text_columns, intents.label_column, intents.id_column) == (("text",), "intent", "")
    assert intents.labels == ("ask", "bye", "greet")
    assert (intents.output.name, intents.metrics, intents.json_keys) == ("softmax", ("accuracy", "macro_f1"),
                                                                         ("intents",))
    assert (dupes.text_columns, dupes.label_column, dupes.labels) == (("question1", "question2"), "is_duplicate",
                                                                      ("no", "yes"))
    assert (dupes.output.name, dupes.metrics, dupes.metric_keys) == ("sigmoid", ("accuracy", "f1"),
                                                                     ("dupes_acc", "dupes_f1"))
    assert scores.kind == "pair-regression" and scores.metrics == ("pearson", "spearman")
    values = [json.loads(line)["score"] for p in ("train", "dev") for line in open(d / f"scores-{p}.jsonl")]
    assert scores.value_range == (min(values), max(values))
    assert reviews.labels == ("0", "1") and reviews.file_format == "auto"
    # Every row of each file is read by the CS224N reader, with its format sniffed.
    for spec, n in ((intents, 40), (dupes, 40), (scores, 40), (reviews, 40)):
        f = read_task_file(spec.train_file, spec)
        assert len(f.examples) == n and not f.skipped
    first = read_task_file(intents.train_file, intents).examples[0]
    assert first.id == "2" and first.line == 2 and intents.labels[first.label] in first.text_a.split()[0] + "greet"


def test_label_names_are_sorted_numerically_and_merge_spellings(tmp_path):
    p = _write_csv(tmp_path / "r.csv", ["text", "label"], [["a", "10"], ["b", "2"], ["c", "2.0"], ["d", "1"]])
    spec = build_spec({"name": "r", "kind": "classification", "train": str(p)})
    assert spec.labels == ("1", "2", "10")
    assert [e.label for e in read_task_file(p, spec).examples] == [2, 1, 1, 0]


def test_a_header_the_guesser_cannot_read(tmp_path):
    p = _write_csv(tmp_path / "odd.csv", ["foo", "bar", "baz"], [["x", "y", "1"]])
    with pytest.raises(UserError, match=r"cannot tell which column holds the text and the label "
                                        r"\(header: 'foo', 'bar', 'baz'\)"):
        declared_specs([f"odd:classification:{p}"], None)
    with pytest.raises(UserError, match="holds the text pair"):
        declared_specs([f"odd:pair-classification:{p}"], None)


def test_bad_rows_warn_with_line_numbers_and_strict_stops(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "good one", "label": "pos"}\n{"text": "", "label": "neg"}\nnot json\n\n'
                 '{"text": "fine", "label": "neg"}\n{"text": "odd", "label": "maybe"}\n[1, 2]\n', encoding="utf-8")
    spec = build_spec({"name": "b", "kind": "classification", "train": str(p), "labels": ["neg", "pos"]})
    seen = []
    f = read_task_file(p, spec, warn=seen.append)
    assert [e.line for e in f.examples] == [1, 5]
    assert [str(s) for s in seen] == ["bad.jsonl:2: skipped row (text is empty)",
                                      "bad.jsonl:3: skipped row (invalid JSON (Expecting value))",
                                      "bad.jsonl:6: skipped row (label 'maybe' is not one of neg, pos)",
                                      "bad.jsonl:7: skipped row (not a JSON object)"]
    with pytest.raises(UserError, match=r"bad.jsonl:2: unusable row \(text is empty\); --strict stops here"):
        read_task_file(p, spec, strict=True)
    c = _write_csv(tmp_path / "bad.csv", ["sentence", "label"], [["ok", "a"], ["too", "many", "fields"], ["ok", "b"]])
    spec = build_spec({"name": "c", "kind": "classification", "train": str(c)})
    f = read_task_file(c, spec, warn=seen.append)
    assert len(f.examples) == 2 and str(f.skipped[0]) == "bad.csv:3: skipped row (3 fields, the header has 2)"


def test_tasks_file_yaml_and_json(tmp_path, task_files):
    d, _ = task_files
    (tmp_path / "tasks.yaml").write_text(f"""
tasks:
  - name: stars
    kind: classification
    train: {d / 'intents-train.csv'}
    text: text
    label: intent
    labels: [greet, bye, ask]
    loss_weight: 0.5
    metrics: [macro_f1, accuracy]
    title: Stars
  - name: sim
    kind: pair-regression[0,10]
    train: {d / 'scores-train.jsonl'}
    id: null
""", encoding="utf-8")
    stars, sim = declared_specs([], str(tmp_path / "tasks.yaml"))
    assert (stars.labels, stars.loss_weight, stars.primary_metric, stars.title) == (
        ("greet", "bye", "ask"), 0.5, "stars_f1", "Stars")
    assert (sim.value_range, sim.id_column, sim.dev_file) == ((0.0, 10.0), "", "")
    (tmp_path / "t.json").write_text(json.dumps([{"name": "x", "kind": "classification", "train": "a.csv",
                                                  "colour": "red"}]), encoding="utf-8")
    with pytest.raises(UserError, match="unknown key\\(s\\) colour; a task may say: name"):
        read_tasks_file(tmp_path / "t.json")
    (tmp_path / "rel.json").write_text(json.dumps({"tasks": [{"name": "x", "kind": "classification",
                                                              "train": "sub/a.csv"}]}), encoding="utf-8")
    assert read_tasks_file(tmp_path / "rel.json")[0]["train"] == str(tmp_path / "sub/a.csv")


# -- metrics, sampling, checkpoints, TUI --------------------------------------------------------

def test_new_metrics_exact():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    assert spearman_rho(x, torch.tensor([2.0, 4.0, 6.0, 8.0, 10.0])) == pytest.approx(1.0)
    # Ties get their average rank: ranks (1.5, 1.5, 3) against (1, 2, 3).
    assert spearman_rho(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(0.8660254)
    spec = TaskSpec.define("d", "D", "d", ("a", "b"), "y", kind="pair-classification", labels=("no", "yes"),
                    metrics=("accuracy", "f1"), json_keys=("d",))
    m = task_metrics(spec, torch.tensor([0.9, 0.8, 0.2, 0.1]), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert m == {"d_acc": 0.5, "d_f1": 0.5, "d_n": 4}  # tp 1, fp 1, fn 1


def test_proportional_sampling_follows_task_sizes(tiny_bert_dir):
    from bertmtl.tasks.files import Example
    from bertmtl.encoders.tokenizer import EncoderTokenizer

    tok = EncoderTokenizer.from_dir(tiny_bert_dir)
    spec = TaskSpec.define("t", "T", "t", ("s",), "y", labels=("a", "b"))
    sets = {name: TaskDataset(TaskSpec.define(name, name, name, ("s",), "y", labels=("a", "b")),
                              [Example(str(i), "good movie", None, i % 2, i) for i in range(n)], tok)
            for name, n in (("big", 400), ("small", 100))}
    rr = RoundRobin(sets, batch_size=10, seed=3, proportional=True)
    counts = {"big": 0, "small": 0}
    for step in range(400):
        for t in rr.tasks_at(step):
            counts[t] += 1
    assert counts["big"] == 400 and 70 <= counts["small"] <= 130
    assert rr.tasks_at(17) == RoundRobin(sets, 10, 3, proportional=True).tasks_at(17)  # a function of the step
    assert list(rr.next(0)) == rr.tasks_at(0)
    assert RoundRobin(sets, 10, 3).tasks_at(5) == ["big", "small"] and spec.name == "t"


def test_checkpoint_round_trip_of_specs(tiny_bert_dir, tmp_path, task_files):
    from bertmtl.runs.checkpoint import load_checkpoint, read_specs, save_checkpoint
    from bertmtl.model import BertModel
    from bertmtl.model.heads import HeadConfig, MultitaskBert
    from bertmtl.tasks import BUILTIN
    from bertmtl.encoders.tokenizer import EncoderTokenizer

    _, flags = task_files
    specs = tuple(declared_specs(list(flags.values()), None))
    model = MultitaskBert(BertModel.from_pretrained(tiny_bert_dir), HeadConfig(mlp_hidden=8), specs)
    tok = EncoderTokenizer.from_dir(tiny_bert_dir)
    save_checkpoint(tmp_path / "ck", model, tok, step=1, epoch=0.1, train_args={}, metrics=None,
                    tasks=[s.name for s in specs])
    assert tuple(read_specs(tmp_path / "ck")) == specs
    loaded = load_checkpoint(tmp_path / "ck").model
    assert tuple(loaded.specs.values()) == specs
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    (tmp_path / "ck" / "tasks.json").unlink()  # as written by earlier versions
    assert tuple(read_specs(tmp_path / "ck")) == BUILTIN


@pytest.mark.parametrize("n", [1, 2, 4])
def test_run_state_follows_the_tasks_of_the_start_record(task_files, n):
    _, flags = task_files
    specs = declared_specs(list(flags.values())[:n], None)
    state = RunState()
    state.apply([{"type": "start", "step": 0, "config": {}, "tasks": [s.to_dict() for s in specs]},
                 {"type": "train", "step": 2, "loss": {s.name: 0.5 for s in specs}},
                 {"type": "eval", "step": 2, "overall": 0.5, **{k: 0.5 for s in specs for k in s.metric_keys}}])
    assert [s.name for s in state.specs] == [s.name for s in specs]
    # overall and each task's primary metric first (they stay in view), then the other metrics
    assert state.dev_columns == ("", "step", "overall", *(s.metric_columns[0] for s in specs),
                                 *(f"{s.title} {METRIC_SHORT[m]}" for s in specs for m in s.metrics[1:]))
    assert set(state.loss) == set(state.colors) == {s.name for s in specs}
    assert len(set(state.colors.values())) == n  # one colour per curve
    assert all(state.evals[0][k] == 0.5 for k in state.metric_keys)


# -- the command line, end to end ---------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("names", [["intents"], ["dupes", "reviews"], ["intents", "dupes", "scores", "reviews"]])
def test_declared_tasks_train_evaluate_resume_predict(tiny_bert_dir, task_files, tmp_path, names):
    _, flags = task_files
    run = tmp_path / "run"
    common = ["--batch-size", "8", "--eval-every", "2", "--log-every", "1", "--precision", "fp32", "--lr", "1e-3"]
    tasks = [a for n in names for a in ("--task", flags[n])]
    r = command("train", "--pretrained", str(tiny_bert_dir), "--out", str(run), *tasks, *common, "--stop-at-step", "2",
                "--sampling", "proportional" if len(names) == 4 else "round-robin", "--loss-weights", f"{names[0]}=2",
                code=0, text=True)
    assert "final dev:" in r.stdout and f"{names[0]} acc" in r.stdout
    # The run says how it read each file: the columns and labels it guessed from the headers.
    reading = {"intents": "task intents (classification, intents-train.csv): text from text, label from intent (labels ",
               "dupes": "task dupes (pair-classification, dupes-train.tsv): text from question1 and question2, label "
                        "from is_duplicate (labels no, yes), id from id",
               "scores": "task scores (pair-regression, scores-train.jsonl): text from sentence1 and sentence2, label "
                         "from score (values ",
               "reviews": "task reviews (classification, reviews-train.csv): text from review, label from label "
                          "(labels 0, 1), no id column"}
    said = (run / "messages.log").read_text()
    assert all(reading[n] in r.stdout + r.stderr and reading[n] in said for n in names)
    start = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert [t["name"] for t in start["tasks"]] == names and start["config"]["tasks"] == []

    resumed = command("train", "--resume", str(run), "--stop-at-step", "3", code=0, text=True)
    assert "task " + names[0] not in resumed.stdout + resumed.stderr  # the checkpoint's specs: nothing guessed
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records if r["type"] in ("start", "resume", "end")] == ["start", "end", "resume", "end"]
    assert records[-1]["step"] == 3

    metrics = json.loads(command("evaluate", "--checkpoint", str(run / "last"), "--json", code=0).stdout)
    saved = json.loads((run / "last" / "metrics.json").read_text())
    keys = [k for n in names for k in metrics if k.startswith(n + "_")]
    assert keys and all(metrics[k] == pytest.approx(saved[k]) for k in keys)
    assert metrics["overall"] == pytest.approx(saved["overall"])

    answer = json.loads(command("predict", "--checkpoint", str(run / "last"), "--json", "how do i learn python",
                                "what is python code", code=0).stdout)
    pair_tasks = {"dupes", "scores"}
    expected = [n + s for n in names if n not in pair_tasks for s in ("1", "2")] + [n for n in names if n in pair_tasks]
    assert list(answer) == [*expected, "checkpoint"] and answer["checkpoint"] == str(run / "last")
    for n in names:
        if n == "scores":
            assert isinstance(answer[n], float)
        elif n not in pair_tasks:
            assert set(answer[n + "1"]) == {"label", "index", "probabilities"}
    lines = command("predict", "--checkpoint", str(run / "last"), "--format", "tsv", "-",
                    input="hello there\nbye now\tgood movie\n", code=0).stdout.splitlines()
    assert len(lines) == 3 and lines[0].split("\t")[2:-1] == [
        c for n in names for c in ((n,) if n in pair_tasks else (n + "1", n + "2"))]


def test_tui_train_passes_every_task_flag_on(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import bertmtl.tui.app as app
    from bertmtl.cli import main

    seen = {}
    monkeypatch.setattr(app, "run_tui", lambda run, checkpoint=None, train_args=None, **kw: seen.update(
        argv=app.TrainingProcess.train(train_args, run).argv))
    r = CliRunner().invoke(main, ["tui", "--train", "--out", str(tmp_path / "run"), "--task", "a:classification:a.csv",
                                  "--task", "b:pair-regression[0,5]:b.csv", "--sampling", "proportional"])
    assert r.exit_code == 0, r.output
    argv = seen["argv"][seen["argv"].index("train") + 1:]
    assert argv == ["--task", "a:classification:a.csv", "--task", "b:pair-regression[0,5]:b.csv", "--sampling",
                    "proportional", "--out", str(tmp_path / "run")]


@pytest.mark.slow
def test_monitor_and_playground_show_every_declared_task(tmp_path, task_files):
    from bertmtl.tui.app import BertmtlApp
    from bertmtl.tui.monitor import DevTable
    from bertmtl.tui.playground import PairScores, SentimentBars

    from .test_tui import POLL, drive, jsonl, start_record, until

    _, flags = task_files
    specs = declared_specs([flags[k] for k in ("intents", "dupes", "scores", "reviews")], None)
    run = tmp_path / "run"
    run.mkdir()
    start = {**start_record(), "tasks": [s.to_dict() for s in specs]}
    (run / "metrics.jsonl").write_text(jsonl([
        start, {"type": "train", "step": 10, "loss": {s.name: 0.5 for s in specs}},
        {"type": "eval", "step": 10, "overall": 0.7, "best": True, **{k: 0.7 for s in specs for k in s.metric_keys}}]))
    intent = {"label": "ask", "index": 0, "probabilities": [0.7, 0.2, 0.1]}
    review = {"label": "1", "index": 1, "probabilities": [0.1, 0.9]}

    class Fake:
        def __init__(self, path):
            self.path, self.metrics, self.specs = Path(path) / "best", {}, specs

        def sentence(self, a):
            return {"intents": intent, "reviews": review}

        def pair(self, a, b):
            return {"intents1": intent, "intents2": intent, "reviews1": review, "reviews2": review,
                    "dupes": {"label": "yes", "index": 1, "probabilities": [0.2, 0.8]}, "scores": 8.5}

    app = BertmtlApp(run, poll_interval=POLL, predictor_factory=Fake)

    async def scenario(pilot):
        table = app.query_one(DevTable)
        await until(pilot, lambda: table.row_count == 1, what="the eval row")
        assert table.columns_shown == app.state.dev_columns and len(table.columns) == 2 + 8 + 1
        assert [str(c) for c in table.get_row_at(0)] == ["★", "10", *["0.700"] * 8, "0.700"]
        loss = app.query_one("#loss-plot")
        assert set(loss.series) == {s.name for s in specs} == set(loss.series_colors)
        play = app.playground
        await pilot.press("p")
        await until(pilot, lambda: play.predictor is not None, what="the model to load")
        await pilot.press(*"hello there", "tab", *"bye now")
        await until(pilot, lambda: play.result_for == ("hello there", "bye now"), what="a pair prediction")
        sa = app.query_one("#sentiment-a", SentimentBars)
        assert sa.spec.name == "intents" and "ask" in sa.render().plain and "reviews 1 p=0.90" in sa.render().plain
        text = app.query_one("#pair-scores", PairScores).render().plain
        assert "dupes" in text and "yes" in text and "8.50 / " in text

    drive(app, scenario, size=(120, 40))
