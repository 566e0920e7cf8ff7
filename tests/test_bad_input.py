"""Bad input gets a clear answer: fuzzed task files, damaged checkpoints, hostile pickles, odd predict input."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertmtl.cli import main
from bertmtl.tasks import TASKS
from bertmtl.tasks.files import read_task_file
from bertmtl.errors import UserError
from bertmtl.model import BertModel

from .fixtures import write_task_data

# -- fuzzed task files --------------------------------------------------------------------

GOOD_ROWS = [["0", "a1", "a fine movie", "3"], ["1", "a2", "a bad one", "0"], ["2", "a3", "so so", "2"]]
cell = st.one_of(
    st.sampled_from(["", " ", "0", "4", "5", "-1", "2.0", "2.5", "nan", "inf", "x", '"', '""', "\t", "\n", "\\",
                     "a \"quoted\" word", "é", "\x00"]),
    st.text(max_size=12),
)
row = st.lists(cell, min_size=0, max_size=6)
mangle = st.sampled_from(["none", "comma", "semicolon", "drop_header", "extra_header", "bom", "crlf", "long_line",
                          "bad_utf8", "binary", "empty", "truncate"])


def _render(rows, how: str) -> bytes:
    delim = {"comma": ",", "semicolon": ";"}.get(how, "\t")
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delim, lineterminator="\r\n" if how == "crlf" else "\n")
    if how != "drop_header":
        w.writerow(["", "id", "sentence", "sentiment"] + (["extra"] if how == "extra_header" else []))
    w.writerows(rows)
    data = buf.getvalue().encode("utf-8")
    if how == "bom":
        data = b"\xef\xbb\xbf" + data
    elif how == "long_line":
        data += b"9\tlong\t" + b"word " * 200_000 + b"\t1\n"  # a 1 MB sentence
    elif how == "bad_utf8":
        data = data.replace(b"a", b"\xff", 1)
    elif how == "binary":
        data = bytes(range(256)) * 50
    elif how == "empty":
        data = b""
    elif how == "truncate":
        data = data[: max(1, len(data) * 2 // 3)]
    return data


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=st.lists(row, max_size=6), how=mangle, seed=st.integers(0, 3))
def test_fuzzed_sst_files_never_crash_or_lose_rows(tmp_path, extra, how, seed):
    rows = GOOD_ROWS[: seed] + extra
    path = tmp_path / f"f{seed}.csv"
    path.write_bytes(_render(rows, how))
    seen = []
    try:
        f = read_task_file(path, TASKS["sst"], warn=seen.append)
    except UserError as e:
        assert path.name in e.message  # a clear error names the file
        assert e.exit_code == 2
        return
    # Every record is either used or reported: nothing is dropped silently.
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
        records = [r for r in csv.reader(fh, delimiter="\t")][1:]
    non_blank = [r for r in records if r and not (len(r) == 1 and not r[0].strip())]
    assert len(f.examples) + len(f.skipped) == len(non_blank)
    assert seen == f.skipped
    for ex in f.examples:
        assert ex.label in range(5) and ex.text_a.strip()
    for s in f.skipped:
        assert s.file == path.name and s.line >= 2 and s.reason
    if f.skipped:
        with pytest.raises(UserError, match="--strict"):
            read_task_file(path, TASKS["sst"], strict=True)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=st.lists(st.lists(cell, min_size=3, max_size=6), max_size=5), how=mangle)
def test_fuzzed_pair_files(tmp_path, extra, how):
    rows = [["0", "q1", "what is it ?", "what is this ?", "1.0"]] + extra
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t")
    w.writerow(["", "id", "sentence1", "sentence2", "is_duplicate"])
    w.writerows(rows)
    data = buf.getvalue().encode()
    if how == "bad_utf8":
        data = data.replace(b"what", b"wh\xfft", 1)
    elif how == "truncate":
        data = data[: len(data) * 2 // 3]
    path = tmp_path / "q.csv"
    path.write_bytes(data)
    try:
        f = read_task_file(path, TASKS["para"])
    except UserError as e:
        assert "q.csv" in e.message
        return
    for ex in f.examples:
        assert ex.label in (0, 1) and ex.text_a and ex.text_b


def test_fuzzed_file_through_the_cli_is_not_a_traceback(tiny_bert_dir, tmp_path):
    d = write_task_data(tmp_path / "data")
    (d / "sts-train.csv").write_bytes(bytes(range(256)) * 100)
    r = CliRunner().invoke(main, ["train", "--pretrained", str(tiny_bert_dir), "--data-dir", str(d),
                                  "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "sts-train.csv:1: missing column" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


# -- damaged checkpoints ------------------------------------------------------------------

@pytest.fixture
def checkpoint(trained_run):
    return trained_run / "best"


def _damage(src, dst, how):
    shutil.copytree(src, dst)
    st_path = dst / "multitask.safetensors"
    if how == "truncated":
        st_path.write_bytes(st_path.read_bytes()[: st_path.stat().st_size // 2])
    elif how == "garbage_header":
        data = bytearray(st_path.read_bytes())
        data[8:40] = b"{not a json header at all!!!!!!"
        st_path.write_bytes(bytes(data))
    elif how == "empty_weights":
        st_path.write_bytes(b"")
    elif how == "missing_json":
        (dst / "heads.json").unlink()
    elif how == "bad_json":
        (dst / "config.json").write_text("{")
    elif how == "other_version":
        info = json.loads((dst / "bertmtl.json").read_text())
        info.update(format=99, version="9.0.0")
        (dst / "bertmtl.json").write_text(json.dumps(info))
    elif how == "wrong_shapes":
        cfg = json.loads((dst / "config.json").read_text())
        cfg["intermediate_size"] *= 2
        (dst / "config.json").write_text(json.dumps(cfg))
    elif how == "not_a_checkpoint":
        (dst / "bertmtl.json").unlink()
    return dst


@pytest.mark.parametrize("how, message", [
    ("truncated", "damaged or truncated safetensors"),
    ("garbage_header", "damaged or truncated safetensors"),
    ("empty_weights", "damaged or truncated safetensors"),
    ("missing_json", "incomplete checkpoint, missing heads.json"),
    ("bad_json", "config.json: not valid JSON"),
    ("other_version", "checkpoint format 99 is not 1 or 2 (written by bertmtl 9.0.0"),
    ("wrong_shapes", "wrong shapes"),
    ("not_a_checkpoint", "not a bertmtl checkpoint"),
])
def test_damaged_checkpoint_is_one_clear_line(checkpoint, tmp_path, how, message):
    bad = _damage(checkpoint, tmp_path / how, how)
    for cmd in (["predict", "hello", "--checkpoint", str(bad)], ["evaluate", "--checkpoint", str(bad)]):
        r = CliRunner().invoke(main, cmd)
        assert r.exit_code == 2, r.output
        assert message in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and r.output.startswith("Error: ")


# -- no pickle ----------------------------------------------------------------------------

class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_malicious_pickle_is_refused_and_never_runs(tiny_bert_dir, tmp_path):
    d = tmp_path / "evil"
    shutil.copytree(tiny_bert_dir, d)
    (d / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    with open(d / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"embeddings.word_embeddings.weight": _Evil(marker)}, fh)
    with pytest.raises(UserError, match="refused or unreadable"):
        BertModel.from_pretrained(d)
    assert not marker.exists()
    r = CliRunner().invoke(main, ["train", "--pretrained", str(d), "--data-dir", str(tmp_path), "--out",
                                  str(tmp_path / "run")])
    assert r.exit_code == 2 and not marker.exists()


def test_no_pickle_in_the_package():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1] / "bertmtl"
    for py in root.rglob("*.py"):
        text = py.read_text()
        assert "import pickle" not in text and "pickle.load" not in text, py
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, (py, line)


# -- odd prediction input -----------------------------------------------------------------

def _predict_stdin(ckpt, data: bytes, timeout=600):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    code = ("import resource, subprocess, sys\n"
            f"p = subprocess.run([sys.executable, '-m', 'bertmtl', 'predict', '-', '--checkpoint', {str(ckpt)!r}],"
            " stdin=sys.stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)\n"
            "sys.stdout.buffer.write(p.stdout); sys.stderr.buffer.write(p.stderr)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(p.returncode)")
    return subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, env=env, timeout=timeout)


@pytest.mark.slow
def test_odd_lines(checkpoint):
    lines = [b"good film " * 1_000, "bell \x07 and escape \x1b[31m red".encode(), b"\x00\x01\x02", b"   ", b"ok",
             b"x" * 10_000]
    r = _predict_stdin(checkpoint, b"\n".join(lines) + b"\n")
    outs = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(outs) == 6 and r.returncode == 1
    assert "sentiment" in outs[0] and "truncated" in outs[0]  # 10,000 characters, 2,000 words
    assert "sentiment" in outs[1] and "sentiment" in outs[2]  # control characters are cleaned, not fatal
    assert outs[3]["error"] == "empty line" and "sentiment" in outs[4]
    assert "sentiment" in outs[5]  # one 10,000-letter "word" is a single [UNK], answered


def test_empty_string_arguments_are_usage_errors(checkpoint):
    r = CliRunner().invoke(main, ["predict", "", "--checkpoint", str(checkpoint)])
    assert r.exit_code == 2 and "must not be empty" in r.output


def _lines(n: int) -> bytes:
    return b"".join(b"the film number %d is good\tthe movie %d\n" % (i, i % 97) if i % 3 else b"plot %d\n" % i
                    for i in range(n))


@pytest.mark.slow
def test_100k_stdin_lines_in_bounded_memory(checkpoint):
    n = 100_000
    r = _predict_stdin(checkpoint, _lines(n))
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout.splitlines()
    assert len(out) == n
    assert "similarity" in json.loads(out[1]) and "sentiment" in json.loads(out[0])
    peak_kb = int(r.stderr.strip().splitlines()[-1])
    # The baseline, measured here with the same torch build: the same command answering 100 lines
    # (torch, the model, one window's batches). A CUDA build of torch maps ~200 MB more at import
    # than the CPU build, so an absolute bound passes or fails with the build, not with this code.
    base = _predict_stdin(checkpoint, _lines(100))
    assert base.returncode == 0, base.stderr[-2000:]
    base_kb = int(base.stderr.strip().splitlines()[-1])
    print(f"stdin: peak RSS {peak_kb / 1024:.0f} MiB for {n:,} lines, {base_kb / 1024:.0f} MiB for 100")
    # The input is 3 MB and its answers ~40 MB: bounded means the stream adds far less than holding
    # them, whatever n is (a window of 1,024 lines is in memory at a time).
    assert peak_kb - base_kb < 100_000, (peak_kb, base_kb)
