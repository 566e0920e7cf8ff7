"""Reading task files: validation, skipped rows, strict mode, bucketing, round-robin."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from bertmtl.tasks import TASKS
from bertmtl.data.batching import RoundRobin, TaskDataset, bucketed_batches
from bertmtl.tasks.files import parse_tasks, read_task_file
from bertmtl.errors import UserError
from bertmtl.encoders.tokenizer import EncoderTokenizer

from .fixtures import write_task_data


def _write(path, text: str | bytes):
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


HEADER_SST = "\tid\tsentence\tsentiment\n"
HEADER_STS = "\tid\tsentence1\tsentence2\tsimilarity\n"


def test_reads_fixture_and_reports_the_stray_quote_row(tmp_path):
    d = write_task_data(tmp_path / "data")
    seen = []
    f = read_task_file(d / "quora-train.csv", TASKS["para"], warn=seen.append)
    assert len(f.examples) == 96
    assert len(f.skipped) == 1 and seen == f.skipped
    assert f.skipped[0].line == 98 and "is_duplicate is empty" in f.skipped[0].reason
    assert str(f.skipped[0]) == "quora-train.csv:98: skipped row (is_duplicate is empty)"


@pytest.mark.parametrize("row, reason", [
    ("0\ta\tfine sentence\t\n", "sentiment is empty"),
    ("0\ta\tfine sentence\t7\n", "sentiment 7 is not one of 0, 1, 2, 3, 4"),
    ("0\ta\tfine sentence\t2.5\n", "sentiment 2.5 is not one of"),
    ("0\ta\tfine sentence\tgood\n", "sentiment 'good' is not a number"),
    ("0\ta\tfine sentence\tnan\n", "sentiment 'nan' is not finite"),
    ("0\ta\t   \t3\n", "sentence is empty"),
    ("0\ta\tfine\t3\textra\n", "5 fields, the header has 4"),
    ("0\ta\n", "2 fields, the header has 4"),
])
def test_unusable_sst_rows_are_skipped_with_reason(tmp_path, row, reason):
    p = _write(tmp_path / "sst.csv", HEADER_SST + "1\tb\tgood movie\t4\n" + row)
    f = read_task_file(p, TASKS["sst"])
    assert [e.label for e in f.examples] == [4]
    assert len(f.skipped) == 1 and reason in f.skipped[0].reason and f.skipped[0].line == 3
    with pytest.raises(UserError, match=r"sst.csv:3: unusable row .*--strict"):
        read_task_file(p, TASKS["sst"], strict=True)


def test_sts_range_and_invalid_utf8(tmp_path):
    p = _write(tmp_path / "sts.csv", HEADER_STS.encode() + b"0\ta\tx y\tx z\t5.5\n1\tb\tok \xff\tfine\t2\n2\tc\ta\tb\t3.2\n")
    f = read_task_file(p, TASKS["sts"])
    assert [e.label for e in f.examples] == [3.2]
    assert [s.reason for s in f.skipped] == ["similarity 5.5 is outside 0-5",
                                             "sentence1 has invalid UTF-8 (byte 0xFF at character 3)"]


def test_a_lone_surrogate_in_a_json_lines_row_is_skipped_not_fatal(tmp_path):
    """A JSON escape such as \\ud800 decodes to text the tokenizer refuses: that row is skipped."""
    from bertmtl.tasks.declared import build_spec

    p = tmp_path / "t.jsonl"
    p.write_text('{"text": "fine words", "label": "a"}\n{"text": "bad \\ud800 one", "label": "b"}\n'
                 '{"text": "more words", "label": "b"}\n', encoding="utf-8")
    spec = build_spec({"name": "t", "kind": "classification", "train": str(p)})
    f = read_task_file(p, spec)
    assert [e.text_a for e in f.examples] == ["fine words", "more words"]
    assert [(s.line, s.reason) for s in f.skipped] == [(2, "text has invalid Unicode (lone surrogate U+D800 at character 4)")]


def test_quoted_fields_are_parsed_as_csv(tmp_path):
    p = _write(tmp_path / "sst.csv", HEADER_SST + '0\ta\t"""Quoted"" and\ttab"\t2\n')
    f = read_task_file(p, TASKS["sst"])
    assert f.examples[0].text_a == '"Quoted" and\ttab'


@pytest.mark.parametrize("content, match", [
    ("", "empty file"),
    ("id,sentence,sentiment\n0,a,1\n", "missing column\\(s\\) id, sentence, sentiment .*tab-separated"),
    ("\tid\tsentence\n0\ta\tb\n", "missing column\\(s\\) sentiment"),
    (HEADER_SST + "0\ta\t\t\n", "no usable rows \\(1 skipped\\)"),
])
def test_file_level_errors_name_the_file(tmp_path, content, match):
    p = _write(tmp_path / "bad.csv", content)
    with pytest.raises(UserError, match=match) as e:
        read_task_file(p, TASKS["sst"])
    assert "bad.csv" in e.value.message and e.value.exit_code == 2


def test_missing_file_and_binary_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_task_file(tmp_path / "nope.csv", TASKS["sst"])
    p = _write(tmp_path / "bin.csv", HEADER_SST.encode() + b"0\ta\tb\x00c\t1\n1\tb\tfine\t1\n")
    f = read_task_file(p, TASKS["sst"])
    assert [s.reason for s in f.skipped] == ["sentence has a NUL byte (binary data?)"]
    p = _write(tmp_path / "bin2.csv", bytes(range(256)) * 40)
    with pytest.raises(UserError, match=r"bin2.csv:1: missing column"):
        read_task_file(p, TASKS["sst"])


def test_missing_file_exit_code_through_cli(tmp_path):
    from bertmtl.cli import main

    r = CliRunner().invoke(main, ["train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2
    assert "ids-sst-train.csv: no such file" in r.output and "Traceback" not in r.output


def test_parse_tasks():
    assert parse_tasks("sts, sst") == ["sst", "sts"]
    assert parse_tasks("paraphrase") == ["para"]
    with pytest.raises(ValueError):
        parse_tasks("sst,nli")


def test_bucketed_batches_cover_everything_once_and_reduce_padding():
    g = torch.Generator().manual_seed(0)
    lengths = [int(x) for x in torch.randint(3, 60, (1000,), generator=g)]
    batches = bucketed_batches(lengths, 32, torch.Generator().manual_seed(1))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    padded = lambda bs: sum(max(lengths[i] for i in b) * len(b) for b in bs)  # noqa: E731
    plain = bucketed_batches(lengths, 32, torch.Generator().manual_seed(1), bucket=False)
    assert padded(batches) < 0.7 * padded(plain)
    again = bucketed_batches(lengths, 32, torch.Generator().manual_seed(1))
    assert again == batches  # a pure function of the seed
    assert bucketed_batches(lengths, 32, torch.Generator().manual_seed(2)) != batches


def test_round_robin_cycles_and_resumes(tiny_bert_dir, tmp_path):
    d = write_task_data(tmp_path / "data")
    tok = EncoderTokenizer.from_dir(tiny_bert_dir)
    sst = read_task_file(d / "ids-sst-train.csv", TASKS["sst"]).examples
    sts = read_task_file(d / "sts-train.csv", TASKS["sts"]).examples[:40]
    sets = {"sst": TaskDataset(TASKS["sst"], sst, tok), "sts": TaskDataset(TASKS["sts"], sts, tok)}
    rr = RoundRobin(sets, 16, seed=3)
    assert rr.steps_per_epoch() == 6  # 96 SST examples / 16
    seen = {"sst": [], "sts": []}
    for _ in range(6):
        for t, b in rr.next().items():
            seen[t].extend(b.index)
    assert sorted(seen["sst"]) == list(range(96))
    assert len(seen["sts"]) == 80 and sorted(seen["sts"]) == sorted(list(range(40)) * 2)  # 2 passes of 16+16+8
    state = rr.state_dict()
    nxt = [(t, b.index) for t, b in rr.next().items()]
    rr2 = RoundRobin(sets, 16, seed=3)
    rr2.load_state_dict(state)
    assert [(t, b.index) for t, b in rr2.next().items()] == nxt


def test_bi_pair_batches_stack_both_sentences(tiny_bert_dir, tmp_path):
    d = write_task_data(tmp_path / "data")
    tok = EncoderTokenizer.from_dir(tiny_bert_dir)
    ex = read_task_file(d / "sts-train.csv", TASKS["sts"]).examples[:4]
    b = TaskDataset(TASKS["sts"], ex, tok, "bi").batch([0, 1, 2, 3])
    assert b.bi_pair and b.inputs.input_ids.shape[0] == 8
    assert b.inputs.input_ids[4, : len(tok.encode([ex[0].text_b])[0].ids)].tolist() == tok.encode([ex[0].text_b])[0].ids
    c = TaskDataset(TASKS["sts"], ex, tok, "cross").batch([0, 1])
    assert not c.bi_pair and c.inputs.input_ids.shape[0] == 2 and c.inputs.token_type_ids.max() == 1
