"""`predict -` under hostile input: one output line per input line, in order, whatever a line holds;
text that is not valid Unicode gives a clear error at the tokenizer boundary (issue #16)."""

from __future__ import annotations

import io
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertmtl.inference.protocol import answer_stream as _predict_stdin
from bertmtl.errors import UserError
from bertmtl.inference.predict import Item, Predictor
from bertmtl.inference.protocol import tsv_columns
from bertmtl.encoders.tokenizer import EncoderTokenizer

from .conftest import command


GOOD = "the movie is very good"
BAD_ARG = os.fsdecode(b"bad \xff byte")  # how Python hands a program an argument with an invalid byte


@pytest.fixture(scope="module")
def run_dir(trained_run):
    return trained_run


@pytest.fixture(scope="module")
def predictor(run_dir):
    return Predictor(run_dir, precision="fp32")


def stream(predictor, data: bytes, fmt: str = "jsonl") -> tuple[int, bytes]:
    """What `predict -` writes for stdin `data`, in-process (the CLI's own function, a real fd)."""
    import tempfile

    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.seek(0)
        out = io.BytesIO()
        rc = _predict_stdin(predictor, fmt, fd=f.fileno(), out=out)
    return rc, out.getvalue()


def strict_json(line: bytes) -> dict:
    """Parse one output line as standard JSON in valid UTF-8, holding no lone surrogate."""
    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    obj = json.loads(line.decode("utf-8"), parse_constant=no_constants)  # strict UTF-8: no encoded surrogates
    json.dumps(obj, ensure_ascii=False).encode("utf-8")  # raises if an escape decoded to a lone surrogate
    return obj


# -- the tokenizer boundary -------------------------------------------------------------------

def test_tokenizer_names_text_that_is_not_valid_unicode(tiny_bert_dir):
    tok = EncoderTokenizer.from_dir(tiny_bert_dir)
    with pytest.raises(TypeError):  # what the library itself does, which we map below
        tok._tok.encode_batch(["\ud800"])
    with pytest.raises(UserError, match=r"text 2 is not valid Unicode \(lone surrogate U\+D800 at character 0\)"):
        tok.encode(["fine", "\ud800"])
    with pytest.raises(UserError, match=r"text 1 is not valid UTF-8 \(byte 0xFF at character 4\)"):
        tok.encode(["fine"], [BAD_ARG])
    assert len(tok.encode(["nul \x00 and \r inside"])[0].ids) > 2


@pytest.mark.slow
def test_invalid_byte_in_an_argument_is_a_clear_error(run_dir):
    r = command("predict", os.fsencode(BAD_ARG), "--checkpoint", str(run_dir))  # the real byte 0xFF in argv
    assert r.returncode == 2, r.stderr
    assert b"Error: the sentence is not valid UTF-8 (byte 0xFF at character 4)" in r.stderr
    assert b"Traceback" not in r.stderr and r.stdout == b""
    r = command("predict", "good", os.fsencode(BAD_ARG), "--checkpoint", str(run_dir), "--json")
    assert r.returncode == 2 and b"Error: sentence 2 is not valid UTF-8" in r.stderr, r.stderr
    assert b"Traceback" not in r.stderr


def test_predictor_raises_user_error_for_one_bad_sentence(predictor):
    with pytest.raises(UserError, match="lone surrogate U\\+DFFF"):
        predictor.sentence("ok \udfff")
    assert "sentiment" in predictor.sentence("ok \x00 fine")


# -- the stream ---------------------------------------------------------------------------

@pytest.mark.slow
def test_known_killers_in_a_real_process(run_dir):
    lines = [
        GOOD.encode(),
        b'{"id": ' + b"7" * 5000 + b', "sentence": "good"}',  # past Python's int-digit limit
        b'{"sentence": "\\ud800"}',  # a lone surrogate, as JSON escapes it
        b'{"id": "\\udcff", "sentence": "good"}',  # ... in the id, which cannot be echoed
        b"bad \xff\xfe utf8",
        b"nul \x00 inside",
        b'{"id": 1e999, "sentence": "good"}',
        b'{"id": NaN, "sentence": "good"}',
        b'{"sentence": ' + b"[" * 200_000,  # deeper than json's recursion
        b'{"id": "q", "sentence1": "the dog ?", "sentence2": "the cat \\ud83d\\ude00 ?"}\r',
        b"good " * 400_000,  # over the 1 MiB line cap
        b'{"id": 12345678901234567890, "sentence": "good"}',
    ]
    r = command("predict", "-", "--json", "--checkpoint", str(run_dir), input=b"\n".join(lines) + b"\n")
    assert b"Traceback" not in r.stderr, r.stderr.decode(errors="replace")
    assert r.returncode == 1
    assert b"7 of 12 input line(s) could not be answered" in r.stderr
    outs = [strict_json(x) for x in r.stdout.splitlines()]
    assert len(outs) == len(lines)
    errors = {o["line"]: o["error"] for o in outs if "error" in o}
    assert errors == {
        2: "invalid JSON (a number longer than 4300 digits)",
        3: "the sentence is not valid Unicode (lone surrogate U+D800 at character 0)",
        4: "id is not valid UTF-8 (byte 0xFF at character 0)",
        5: "invalid UTF-8 at byte 4",
        7: "id must be a finite number",
        8: "id must be a finite number",
        9: "invalid JSON (nested too deeply)",
    }
    assert all("id" not in outs[i - 1] for i in errors)  # an id that cannot be echoed is left out
    assert "sentiment" in outs[0] and "sentiment" in outs[5]
    assert outs[9]["id"] == "q" and "similarity" in outs[9]
    assert "truncated" in outs[10]
    assert outs[11]["id"] == 12345678901234567890


def test_a_batch_failure_costs_only_the_failing_item(predictor, monkeypatch):
    import bertmtl.inference.predict as pm

    # Without the checks the real bad string reaches the real tokenizer and fails the whole batch:
    # the batch is then answered one item at a time, and only that item gets an error.
    monkeypatch.setattr(pm, "_check_texts", lambda it: it.error)
    items = [Item(1, GOOD), Item(2, "\ud800", id="x"), Item(3, "good", "bad"), Item(4, "fine")]
    out = list(predictor.answers(items))
    assert [o.get("line") for o in out] == [None, 2, None, None]
    assert out[1]["id"] == "x" and "not valid Unicode (lone surrogate U+D800" in out[1]["error"]
    assert out[0] == predictor.sentence(GOOD) and "similarity" in out[2] and "sentiment" in out[3]


def test_unwritable_answers_become_error_lines(predictor):
    # An id no JSON can hold (an in-process caller's object) or a lone surrogate in an id.
    items = [Item(1, GOOD, id=object()), Item(2, GOOD, id="\ud800"), Item(3, GOOD, id=float("nan")), Item(4, GOOD)]
    from bertmtl.inference.protocol import output_line

    for fmt, failed in (("jsonl", [True, True, True, False]), ("tsv", [False, True, False, False])):
        lines = [output_line(r, n, fmt, predictor.specs) for n, r in enumerate(predictor.stream(items), 1)]
        assert [is_err for _, is_err in lines] == failed  # TSV writes any id as text, but never a lone surrogate
        for n, (data, _) in enumerate(lines, 1):
            text = data.decode("utf-8")
            assert text.endswith("\n") and text.count("\n") == 1
            if fmt == "jsonl":
                obj = strict_json(data)
                assert obj.get("line", n) == n
            else:
                assert text.split("\t")[0] == str(n)


# -- the fuzz test --------------------------------------------------------------------------

class RawNumber(str):
    """A JSON number written as given (json.dumps cannot write one past the int-digit limit)."""


def to_json(v) -> str:
    """JSON text for v, including what json.dumps refuses or hides: huge ints, NaN, 1e999."""
    if isinstance(v, RawNumber):
        return str(v)
    if isinstance(v, float):
        return "NaN" if v != v else "1e999" if v == float("inf") else "-Infinity" if v == float("-inf") else repr(v)
    if isinstance(v, list):
        return "[" + ",".join(map(to_json, v)) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(k) + ":" + to_json(x) for k, x in v.items()) + "}"
    return json.dumps(v)  # strings: lone surrogates come out as \udXXX escapes


surrogates = st.integers(0xD800, 0xDFFF).map(chr)
texts = st.lists(st.one_of(st.characters(), surrogates, st.sampled_from(["\x00", "\r", "\t", " ", "good"])),
                 max_size=12).map("".join)
huge_ints = st.builds(lambda n, sign: RawNumber(sign + "9" * n), st.integers(4000, 6000), st.sampled_from(["", "-"]))
leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-10**40, 10**40), st.floats(), texts, huge_ints)
keys = st.one_of(st.sampled_from(["sentence", "sentence1", "sentence2", "id"]), texts)
json_values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
                           max_leaves=8)
sentences = st.one_of(texts, json_values)  # mostly strings, so that many lines reach the model
json_lines = st.one_of(
    st.fixed_dictionaries({"sentence": sentences}, optional={"id": json_values}),
    st.fixed_dictionaries({"sentence1": sentences, "sentence2": sentences}, optional={"id": json_values}),
    st.dictionaries(keys, json_values, max_size=3),
    json_values,
).map(lambda v: to_json(v).encode())
lines = st.one_of(
    json_lines,
    st.binary(max_size=40),  # arbitrary bytes: NUL, \r, invalid UTF-8, tabs
    texts.map(lambda s: s.encode("utf-8", "surrogatepass")),  # encoded surrogates: invalid UTF-8 too
).map(lambda b: b.replace(b"\n", b" "))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                     HealthCheck.function_scoped_fixture])
@pytest.mark.slow
@given(st.lists(lines, min_size=1, max_size=8), st.sampled_from(["jsonl", "tsv"]))
def test_fuzz_one_output_line_per_input_line(predictor, capsys, hostile, fmt):
    # A known-good line after each hostile one: every good line must be answered, in its place.
    data = []
    for k, h in enumerate(hostile):
        data += [h, json.dumps({"id": f"ok{k}", "sentence": GOOD}).encode()]
    rc, out = stream(predictor, b"\n".join(data) + b"\n", fmt)
    assert "Traceback" not in capsys.readouterr().err
    rows = out.decode("utf-8").split("\n")  # strict UTF-8
    assert rows.pop() == ""
    if fmt == "tsv":
        assert rows.pop(0).split("\t") == list(tsv_columns(predictor.specs))
    assert len(rows) == len(data)
    failed = 0
    for n, row in enumerate(rows, 1):
        if fmt == "jsonl":
            obj = strict_json(row.encode())
            failed += "error" in obj
            assert obj.get("line", n) == n
            if n % 2 == 0:
                assert obj["id"] == f"ok{n // 2 - 1}" and "sentiment" in obj and "error" not in obj
        else:
            cells = row.split("\t")
            assert len(cells) == len(tsv_columns(predictor.specs)) and cells[0] == str(n)
            failed += cells[-1] != ""
            if n % 2 == 0:
                assert cells[1] == f"ok{n // 2 - 1}" and cells[2] != "" and cells[-1] == ""
    assert rc == (1 if failed else 0)
