"""`bertmtl predict`: single sentences, pairs, JSON, stdin streams with bad lines, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from bertmtl.cli import main
from bertmtl.tasks import TASKS
from bertmtl.data.batching import TaskDataset
from bertmtl.tasks.files import read_task_file
from bertmtl.inference.evaluate import outputs_of as dataset_predict
from bertmtl.inference.predict import Item, Predictor
from bertmtl.inference.protocol import parse_line

from .conftest import command


@pytest.fixture
def run_dir(trained_run):
    return trained_run


def test_single_sentence_json(run_dir):
    r = CliRunner().invoke(main, ["predict", "the movie is very good", "--checkpoint", str(run_dir), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    s = out["sentiment"]
    assert set(out) == {"sentiment", "checkpoint"} and out["checkpoint"] == str(run_dir / "best")
    assert s["label"] in ("negative", "somewhat negative", "neutral", "somewhat positive", "positive")
    assert s["index"] == max(range(5), key=lambda i: s["probabilities"][i])
    assert sum(s["probabilities"]) == pytest.approx(1.0, abs=1e-4)


def test_pair_json_matches_the_evaluation_path(run_dir, tmp_path):
    a, b = "the dog eat food ?", "the cat eat food ?"
    r = CliRunner().invoke(main, ["predict", a, b, "--checkpoint", str(run_dir), "--json", "--precision", "fp32"])
    out = json.loads(r.stdout)
    assert set(out) == {"sentiment1", "sentiment2", "paraphrase_prob", "is_paraphrase", "similarity", "checkpoint"}
    assert out["is_paraphrase"] == (out["paraphrase_prob"] > 0.5)
    # The same numbers as the dev-evaluation code path computes for this pair.
    p = Predictor(run_dir, precision="fp32")
    (tmp_path / "q.csv").write_text(f"\tid\tsentence1\tsentence2\tis_duplicate\n0\tx\t{a}\t{b}\t1\n")
    ex = read_task_file(tmp_path / "q.csv", TASKS["para"]).examples
    para = dataset_predict(p.model, TaskDataset(TASKS["para"], ex, p.tokenizer))
    sts = dataset_predict(p.model, TaskDataset(TASKS["sts"], ex, p.tokenizer))
    assert out["paraphrase_prob"] == pytest.approx(para[0].item(), abs=1e-5)
    assert out["similarity"] == pytest.approx(sts[0].item(), abs=1e-3)
    single = p.sentence(a)["sentiment"]["probabilities"]
    assert out["sentiment1"]["probabilities"] == pytest.approx(single, abs=1e-6)


def test_human_table(run_dir):
    r = CliRunner().invoke(main, ["predict", "good film", "bad film", "--checkpoint", str(run_dir)])
    assert r.exit_code == 0
    for word in ("sentiment 1", "sentiment 2", "paraphrase", "similarity"):
        assert word in r.output


@pytest.mark.slow
def test_stdin_mixed_lines_in_order_with_errors(run_dir):
    lines = [
        b"the movie is good",
        b"the dog ?\tthe cat ?",
        b'{"id": "q1", "sentence1": "learn python ?", "sentence2": "learn code ?"}',
        b'{"sentence": "boring plot", "id": 7}',
        b"{not json",
        b'{"text": "wrong field"}',
        b"bad \xff utf8",
        b"",
        b"a\tb\tc",
        b"the film is great",
    ]
    r = command("predict", "-", "--checkpoint", str(run_dir), input=b"\n".join(lines) + b"\n")
    assert r.returncode == 1
    assert b"5 of 10 input line(s) could not be answered" in r.stderr
    outs = [json.loads(x) for x in r.stdout.decode().splitlines()]
    assert len(outs) == 10
    assert "sentiment" in outs[0] and "similarity" in outs[1]
    assert outs[2]["id"] == "q1" and "paraphrase_prob" in outs[2]
    assert outs[3]["id"] == 7 and "sentiment" in outs[3]
    errors = {o["line"]: o["error"] for o in outs if "error" in o}
    assert sorted(errors) == [5, 6, 7, 8, 9]
    assert errors[5].startswith("invalid JSON") and "sentence1" in errors[6]
    assert errors[7] == "invalid UTF-8 at byte 4" and errors[8] == "empty line"
    single = Predictor(run_dir).sentence("the film is great")
    assert outs[9] == single


@pytest.mark.slow
def test_stdin_all_good_exit_zero_and_tsv(run_dir):
    r = command("predict", "--checkpoint", str(run_dir), "--format", "tsv", input=b"good\nbad\tworse\n")
    assert r.returncode == 0, r.stderr
    rows = [x.split("\t") for x in r.stdout.decode().splitlines()]
    assert rows[0][:3] == ["line", "id", "sentiment1"] and len(rows) == 3
    assert rows[1][0] == "1" and rows[1][3] == "" and rows[2][4] != ""


@pytest.mark.slow
def test_stdin_streams_before_input_ends(run_dir):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-m", "bertmtl", "predict", "-", "--checkpoint", str(run_dir)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(b"the movie is good\n")
        proc.stdin.flush()
        t0 = time.time()
        first = proc.stdout.readline()  # answered while stdin is still open
        assert json.loads(first)["sentiment"]["label"]
        assert time.time() - t0 < 60
        proc.stdin.write(b"the plot is bad\n")
        proc.stdin.close()
        assert json.loads(proc.stdout.readline())["sentiment"]
        assert proc.wait(60) == 0
    finally:
        proc.kill()


@pytest.mark.slow
def test_missing_checkpoint_is_a_clear_error(tmp_path):
    p = command("predict", "hello", cwd=tmp_path)
    assert p.returncode == 2
    assert b"train one first with `bertmtl train`" in p.stderr and b"Traceback" not in p.stderr


@pytest.mark.slow
def test_default_checkpoint_is_latest_runs_best(run_dir, tmp_path):
    root = tmp_path / "w"
    shutil.copytree(run_dir, root / "checkpoints" / "r1")
    p = command("predict", "--json", "good film", cwd=root)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["sentiment"] == Predictor(run_dir / "best").sentence("good film")["sentiment"]


def test_usage_errors():
    r = CliRunner().invoke(main, ["predict", "a", "b", "c"])
    assert r.exit_code == 2 and "one sentence, two sentences" in r.output
    r = CliRunner().invoke(main, ["predict", "  "])
    assert r.exit_code == 2


def test_parse_line_forms():
    assert parse_line(1, b"hi\r\n").text_a == "hi"
    it = parse_line(2, '{"sentence1": "a", "sentence2": "b", "id": 3}'.encode())
    assert (it.text_a, it.text_b, it.id, it.error) == ("a", "b", 3, None)
    assert parse_line(3, b'["x"]').text_a == '["x"]'  # only a line starting with { is read as JSON
    assert parse_line(3, b'{"sentence": 5}').error.startswith("expected")
    assert parse_line(4, b'{"sentence": ""}').error.startswith("expected")


def test_long_input_is_truncated_and_said_so(run_dir):
    p = Predictor(run_dir)
    res = p.sentence("good " * 10_000)
    assert "truncated" in res and f"({p.tokenizer.max_length} tokens)" in res["truncated"]
    assert "truncated" not in p.sentence("good")


def test_stream_batches_and_keeps_order(run_dir):
    p = Predictor(run_dir, batch_size=3, precision="fp32")  # bf16 would differ with the padding of a batch
    texts = [("good " * (i % 7 + 1)).strip() for i in range(20)]
    streamed = list(p.stream((Item(i + 1, t) for i, t in enumerate(texts)), window=8))
    one_by_one = [p.sentence(t) for t in texts]
    for a, b in zip(streamed, one_by_one):
        assert a["sentiment"]["index"] == b["sentiment"]["index"]
        assert a["sentiment"]["probabilities"] == pytest.approx(b["sentiment"]["probabilities"], abs=1e-5)
    assert torch.is_inference_mode_enabled() is False


def test_the_next_window_is_prepared_while_the_model_answers_this_one(run_dir, monkeypatch):
    """`predict -` reads and tokenises window k+1 on its own thread while the model answers window
    k: when the model is asked for the first window, the second has been (or is being) prepared."""
    import threading

    p = Predictor(run_dir, precision="fp32")
    prepared, seen = [], []
    second = threading.Event()
    real_prepare, real_run = p._prepare, p._run

    def prepare(items):
        prepared.append((items[0].line, threading.current_thread().name))
        if len(prepared) == 2:
            second.set()
        return real_prepare(items)

    def run(w):
        if not seen:  # the model's first window: the reader goes on meanwhile
            assert second.wait(30), "the second window was not prepared while the first was answered"
        seen.append(w.items[0].line)
        return real_run(w)

    monkeypatch.setattr(p, "_prepare", prepare)
    monkeypatch.setattr(p, "_run", run)
    items = (Item(i + 1, f"film number {i}") for i in range(12))
    windows = list(p.stream_windows(items, window=4))
    assert [len(w) for w in windows] == [4, 4, 4] and seen == [1, 5, 9]
    assert [line for line, _ in prepared] == [1, 5, 9] and {t for _, t in prepared} == {"bertmtl-read-ahead"}
    assert [r["sentiment"] for w in windows for r in w] == [p.sentence(f"film number {i}")["sentiment"] for i in range(12)]


def test_read_ahead_raises_the_readers_error_where_it_arose_and_stops_when_left():
    from bertmtl.inference.predict import _ahead

    def failing():
        yield 1
        yield 2
        raise OSError("read failed")

    got = []
    with pytest.raises(OSError, match="read failed"):
        for v in _ahead(failing()):
            got.append(v)
    assert got == [1, 2]
    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield produced[-1]

    import threading

    def readers() -> set:
        return {t for t in threading.enumerate() if t.name == "bertmtl-read-ahead"}

    for source in (endless(), iter([1, 2])):  # an endless one, and one that ended before the consumer left
        before = readers()
        gen = _ahead(source)
        assert next(gen) in (0, 1)
        gen.close()  # the consumer leaves: the thread stops at its next value, or at once if waiting
        deadline = time.monotonic() + 30
        while readers() - before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not readers() - before
    assert len(produced) <= 4  # the one taken, one in the queue, one waiting to go in


def test_bf16_predictions_stay_close_to_fp32(run_dir):
    exact, fast = Predictor(run_dir, precision="fp32"), Predictor(run_dir, precision="bf16")
    a, b = exact.pair("the dog eat food ?", "the cat eat food ?"), fast.pair("the dog eat food ?", "the cat eat food ?")
    assert a["paraphrase_prob"] == pytest.approx(b["paraphrase_prob"], abs=0.02)
    assert a["similarity"] == pytest.approx(b["similarity"], abs=0.1)
    assert a["sentiment1"]["probabilities"] == pytest.approx(b["sentiment1"]["probabilities"], abs=0.02)


def test_auto_precision_follows_the_hardware(monkeypatch):
    import bertmtl.model.device as dv

    monkeypatch.setattr(dv, "cpu_has_native_bf16", lambda: False)
    assert dv.autocast_dtype("auto", torch.device("cpu"), training=False) is None
    monkeypatch.setattr(dv, "cpu_has_native_bf16", lambda: True)
    assert dv.autocast_dtype("auto", torch.device("cpu"), training=False) is torch.bfloat16
    assert dv.autocast_dtype("fp32", torch.device("cpu"), training=False) is None
    with pytest.raises(ValueError):
        dv.autocast_dtype("fp16", torch.device("cpu"), training=False)


def test_the_predictor_takes_auto_as_a_device(run_dir):
    p = Predictor(run_dir, device="auto")
    assert p.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert "sentiment" in p.sentence("a good film")


def test_a_predictor_from_a_run_or_a_checkpoint_and_its_embeddings(run_dir):
    from bertmtl.errors import UserError

    by_run = Predictor.from_run(run_dir, precision="fp32", device="cpu")
    by_ckpt = Predictor.from_checkpoint(run_dir / "best", precision="fp32", device="cpu")
    assert by_run.path == by_ckpt.path == run_dir / "best"
    assert by_run.pair("a good film", "a great movie") == by_ckpt.pair("a good film", "a great movie")
    with pytest.raises(UserError, match="not a bertmtl checkpoint"):
        Predictor.from_checkpoint(run_dir)
    with pytest.raises(UserError, match="is a checkpoint, not a run directory"):
        Predictor.from_run(run_dir / "best")
    with pytest.raises(TypeError, match="takes a list of items"):
        by_run.predict("a good film")  # not one prediction per character
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1"):
        by_run.encode(["a"], batch_size=0)
    one_by_one = by_run.encode(["a good film", "a great movie"], batch_size=1)  # (no padding: within float error)
    assert torch.allclose(one_by_one, by_run.encode(["a good film", "a great movie"]), atol=1e-5)
    assert by_run.batch_size == 64
    emb = by_run.encode(["a good film", "a great movie", "a good film"])
    assert emb.dtype == torch.float32 and emb.shape == (3, by_run.model.encoder.config.hidden_size)
    assert torch.equal(emb[0], emb[2]) and by_run.encode([]).shape == (0, emb.shape[1])
    with pytest.raises(UserError, match="sentence 2 is"):
        by_run.encode(["fine", "\ud800"])


@pytest.mark.slow
def test_predict_answers_typed_what_the_stdin_protocol_answers_line_for_line(run_dir):
    from bertmtl.tasks.answers import ClassAnswer, ScoreAnswer, YesNoAnswer

    lines = ["the film is great", "a good movie\tthe film is great", '{"id": 7, "sentence1": "a dog", "sentence2": "a cat"}',
             '{"id": "x", "sentence": ""}', '{"id": 9, "sentence": "bad acting"}']
    items = ["the film is great", ("a good movie", "the film is great"), {"id": 7, "sentence1": "a dog", "sentence2": "a cat"},
             {"id": "x", "sentence": ""}, {"id": 9, "sentence": "bad acting"}]
    r = command("predict", "--checkpoint", run_dir, "--precision", "fp32", "-", input="\n".join(lines) + "\n", code=1)
    expected = [json.loads(line) for line in r.stdout.splitlines()]
    got = Predictor(run_dir, precision="fp32", device="cpu").predict(items)
    assert [p.to_dict() for p in got] == expected and len(got) == 5
    one, pair, ided, bad, last = got
    assert isinstance(one["sst"], ClassAnswer) and one["sst"].label == expected[0]["sentiment"]["label"]
    assert one["sst"].probability == max(one["sst"].probabilities)
    assert isinstance(pair["para"], YesNoAnswer) and pair["para"].yes == expected[1]["is_paraphrase"]
    assert isinstance(pair["sts"], ScoreAnswer) and pair["sts"].value == expected[1]["similarity"]
    assert set(pair.answers) == {"sst1", "sst2", "para", "sts"} and ided.id == 7 and last.id == 9
    assert bad.error and bad.line == 4 and bad.id == "x" and not bad.answers
