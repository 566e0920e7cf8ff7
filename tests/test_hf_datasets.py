"""Hugging Face datasets as task data (`--task NAME:KIND:hf:DATASET[:CONFIG]`, tasks-file `dataset:`)
and named columns (`--text-column`, `--text-pair-column`, `--label-column`) for file tasks too.

The datasets are built with the `datasets` library itself and saved on disk (save_to_disk, and a
directory of Parquet files read through load_dataset), offline; the command line trains on them
end to end and its log names the columns and labels it used."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from bertmtl.errors import ConfigError, UserError
from bertmtl.tasks import TaskSpec
from bertmtl.tasks.declared import declared_specs, parse_task_flag, read_tasks_file
from bertmtl.tasks.files import read_task_file

from .conftest import command

datasets = pytest.importorskip("datasets")

POSITIVE = ["a warm and funny film", "the cast is superb", "i would watch it again", "a moving story",
            "sharp writing and fine acting", "it kept me smiling"]
NEGATIVE = ["a dull and tired plot", "the acting is wooden", "i left halfway through", "a waste of an evening",
            "clumsy writing throughout", "it never gets going"]
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def _pairs(n: int, offset: int = 0) -> dict:
    """Pairs of reviews: `same` when both are of one sentiment. Column names no guesser knows."""
    left, right, verdict = [], [], []
    for i in range(offset, offset + n):
        same = i % 2 == 0
        a = POSITIVE[i % 6] if i % 4 < 2 else NEGATIVE[i % 6]
        pool = (POSITIVE if a in POSITIVE else NEGATIVE) if same else (NEGATIVE if a in POSITIVE else POSITIVE)
        left.append(a)
        right.append(pool[(i * 5 + 1) % 6])
        verdict.append(1 if same else 0)
    return {"left": left, "right": right, "verdict": verdict}


def _features():
    return datasets.Features({"left": datasets.Value("string"), "right": datasets.Value("string"),
                              "verdict": datasets.ClassLabel(names=["differ", "agree"])})


@pytest.fixture(scope="module")
def saved_pairs(tmp_path_factory):
    """A DatasetDict (train 40, validation 12) with a ClassLabel column, written by save_to_disk;
    two train rows are unusable (a missing label, -1; an empty text), and one validation row (-1)."""
    d = tmp_path_factory.mktemp("hf") / "pairs"
    train, dev = _pairs(40), _pairs(12, 100)
    train["verdict"][5] = dev["verdict"][3] = -1
    train["left"][7] = "  "
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(train, features=_features()),
                          "validation": datasets.Dataset.from_dict(dev, features=_features())}
                         ).save_to_disk(str(d))
    return d


def test_the_dataset_flag_and_tasks_file_keys(tmp_path):
    assert parse_task_flag("nli:pair-classification:hf:org/data") == {
        "name": "nli", "kind": "pair-classification", "dataset": "org/data"}
    assert parse_task_flag("nli:pair-classification:hf:glue:mrpc") == {
        "name": "nli", "kind": "pair-classification", "dataset": "glue", "config": "mrpc"}
    for bad in ("nli:pair-classification:hf", "nli:classification:hf:a:b:c", "nli:classification:hf::x"):
        with pytest.raises(ValueError, match="NAME:KIND:hf:DATASET"):
            parse_task_flag(bad)
    p = tmp_path / "tasks.yaml"
    for entry, message in (("  kind: classification\n  dataset: d\n  train: t.csv\n", "names its splits .* not train"),
                           ("  kind: classification\n  train: t.csv\n  train_split: x\n", "train_split belong"),
                           ("  kind: classification\n", "missing train")):
        p.write_text("- name: a\n" + entry)
        with pytest.raises(UserError, match=message):
            read_tasks_file(p)


def test_a_saved_dataset_is_read_like_a_file(saved_pairs):
    spec, = declared_specs([f"same:pair-classification:hf:{saved_pairs}"], None,
                           columns={"text_column": "left", "text_pair_column": "right", "label_column": "verdict"})
    # The ClassLabel's names, in its order, are the labels: class 1 stays "agree", the positive one.
    assert (spec.labels, spec.output.name, spec.metrics) == (("differ", "agree"), "sigmoid", ("accuracy", "f1"))
    assert (spec.file_format, spec.train_split, spec.dev_split, spec.dataset_config) == ("hf", "train",
                                                                                         "validation", "")
    assert spec.train_file == spec.dev_file == str(saved_pairs)
    assert spec.reading() == (f"same (pair-classification, dataset {saved_pairs}, train split train, dev split "
                              f"validation): text from left and right, label from verdict (labels differ, agree), "
                              f"no id column")
    seen = []
    train = read_task_file(spec.train_file, spec, warn=seen.append)
    # Rows are numbered as the dataset indexes them; unusable ones are skipped, named.
    assert [str(s) for s in seen] == ["pairs[train]:5: skipped row (verdict is -1 (a missing label))",
                                      "pairs[train]:7: skipped row (left is empty)"]
    raw = _pairs(40)
    assert len(train.examples) == 38 and train.examples[0].id == "0" and train.examples[-1].line == 39
    assert [(e.text_a, e.text_b, e.label) for e in train.examples[:3]] == [
        (raw["left"][i], raw["right"][i], raw["verdict"][i]) for i in range(3)]
    dev = read_task_file(spec.dev_file, spec, split="dev")
    assert [e.label for e in dev.examples] == [v for i, v in enumerate(_pairs(12, 100)["verdict"]) if i != 3]
    with pytest.raises(UserError, match=r"dataset .*pairs\[train\]:5: unusable row \(verdict is -1"):
        read_task_file(spec.train_file, spec, strict=True)
    # Checkpoints carry the spec (tasks.json): the dataset, its config and splits come back.
    assert TaskSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_a_dataset_of_files_through_load_dataset_and_a_tasks_file(tmp_path, saved_pairs):
    """A directory of data files (here Parquet, as the Hub stores datasets) goes through
    datasets.load_dataset; a tasks file names it relative to itself, with its splits."""
    files = tmp_path / "data" / "reviews"
    files.mkdir(parents=True)
    loaded = datasets.load_from_disk(str(saved_pairs))
    for split in ("train", "validation"):
        loaded[split].to_parquet(str(files / f"{split}.parquet"))
    (tmp_path / "tasks.yaml").write_text("- name: same\n  kind: pair-classification\n  dataset: data/reviews\n"
                                         "  train_split: validation\n  dev_split: null\n  text: [left, right]\n"
                                         "  label: verdict\n")
    spec, = declared_specs([], str(tmp_path / "tasks.yaml"))
    assert (spec.train_file, spec.train_split, spec.dev_split, spec.dev_file) == (str(files), "validation", "", "")
    assert spec.labels == ("differ", "agree")
    assert len(read_task_file(spec.train_file, spec).examples) == 11  # one -1 label


def test_a_regression_dataset_without_a_dev_split(tmp_path):
    d = tmp_path / "scores"
    datasets.Dataset.from_dict({"sentence1": POSITIVE, "sentence2": NEGATIVE, "score": [0.5, 1, 2.5, 3, 4, 4.5]}
                               ).save_to_disk(str(d))  # a Dataset, not a dict: its one split is "train"
    spec, = declared_specs([f"sim:pair-regression:hf:{d}"], None)
    assert (spec.text_columns, spec.label_column, spec.value_range) == (("sentence1", "sentence2"), "score",
                                                                         (0.5, 4.5))
    assert (spec.dev_split, spec.dev_file) == ("", "")
    assert [e.label for e in read_task_file(spec.train_file, spec).examples] == [0.5, 1, 2.5, 3, 4, 4.5]


def test_rows_that_hold_lists_are_skipped_saying_so(tmp_path):
    d = tmp_path / "tokens"
    datasets.Dataset.from_dict({"text": [["a", "token", "list"], ["more"], ["x"]] * 2, "label": [0, 1, 1] * 2}
                               ).save_to_disk(str(d))
    with pytest.raises(UserError, match="holds 0 distinct label"):  # every row unusable: no labels to read
        declared_specs([f"t:classification:hf:{d}"], None)
    spec = TaskSpec.define("t", "t", "t", ("text",), "label", kind="classification", labels=("0", "1"),
                           train_file=str(d), file_format="hf", train_split="train", id_column="")
    seen = []
    with pytest.raises(UserError, match="no usable rows"):
        read_task_file(spec.train_file, spec, warn=seen.append)
    assert str(seen[0]) == "tokens[train]:0: skipped row (text holds a list, not a text or a label)"


def test_what_a_dataset_directory_cannot_give_is_said(tmp_path):
    empty = tmp_path / "empty"
    none = datasets.Dataset.from_dict({"text": ["a"], "label": ["x"]}).filter(lambda r: False)  # one shard, no rows
    datasets.DatasetDict({"train": none,
                          "validation": datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["x", "y"]})}
                         ).save_to_disk(str(empty))
    with pytest.raises(UserError, match="the train split of dataset .*empty has no rows"):
        declared_specs([f"t:classification:hf:{empty}"], None)
    broken = tmp_path / "broken"  # data files whose train file has a header and no rows: a column of nulls
    broken.mkdir()
    (broken / "train.csv").write_text("text,label\n")
    (broken / "validation.csv").write_text("text,label\na,x\n")
    with pytest.raises(UserError) as e:
        declared_specs([f"t:classification:hf:{broken}"], None)
    assert str(e.value.message).startswith(f"dataset {broken}: cannot load it (") and ": " in str(e.value.message)
    (tmp_path / "one.csv").write_text("text,label\na,x\n")
    with pytest.raises(UserError, match="a file, not a dataset .* a file named hf is written ./hf"):
        declared_specs([f"t:classification:hf:{tmp_path / 'one.csv'}"], None)


def test_what_cannot_be_read_is_said(saved_pairs, tmp_path, monkeypatch):
    pair = f"same:pair-classification:hf:{saved_pairs}"
    with pytest.raises(UserError, match=r"cannot tell which column holds the text pair and the label \(header: "
                                        r"'left', 'right', 'verdict'\)\. Name the columns: --text-column"):
        declared_specs([pair], None)
    with pytest.raises(UserError, match=r"pairs\[train\]: missing column\(s\) nope \(it has left, right, verdict\)"):
        declared_specs([pair], None, columns={"text_column": "left", "text_pair_column": "right",
                                              "label_column": "nope"})
    with pytest.raises(UserError, match="give both --text-column and --text-pair-column"):
        declared_specs([pair], None, columns={"text_column": "left"})
    with pytest.raises(UserError, match="--text-pair-column: task one is a classification task"):
        declared_specs([f"one:classification:hf:{saved_pairs}"], None,
                       columns={"text_column": "left", "text_pair_column": "right"})
    with pytest.raises(UserError, match="a directory written by save_to_disk has no configs"):
        declared_specs([pair + ":mrpc"], None)
    (tmp_path / "t.yaml").write_text(f"- name: same\n  kind: pair-classification\n  dataset: {saved_pairs}\n"
                                     "  train_split: nope\n")
    with pytest.raises(UserError, match="has no split 'nope' to train on \\(it has train, validation\\)"):
        declared_specs([], str(tmp_path / "t.yaml"))
    # Without the library: the extra to install, not an ImportError.
    from bertmtl.tasks import hf_datasets

    hf_datasets._load.cache_clear()
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(UserError, match=r"needs the datasets library: pip install -e \"\.\[datasets\]\""):
        declared_specs([pair], None)
    hf_datasets._load.cache_clear()


@pytest.mark.slow
def test_train_resume_evaluate_predict_from_a_saved_dataset_with_named_columns(tiny_bert_dir, saved_pairs, tmp_path):
    """Named by a relative path from where the run starts; resumed from another directory."""
    import os

    run, here, elsewhere = tmp_path / "run", tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    r = command("train", "--pretrained", tiny_bert_dir, "--out", run, "--task",
                f"same:pair-classification:hf:{os.path.relpath(saved_pairs, here)}", "--text-column", "left",
                "--text-pair-column", "right", "--label-column", "verdict", "--batch-size", "8", "--max-steps", "3",
                "--stop-at-step", "2", "--eval-every", "3", "--precision", "fp32", code=0, text=True, cwd=here,
                HF_HOME=tmp_path / "hf", **OFFLINE)
    said = (run / "messages.log").read_text()
    reading = (f"task same (pair-classification, dataset {saved_pairs}, train split train, dev split validation): "
               f"text from left and right, label from verdict (labels differ, agree), no id column")
    assert reading in r.stderr + r.stdout and reading in said
    assert "pairs[train]:5: skipped row (verdict is -1 (a missing label))" in said
    start = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert start["config"]["text_column"] == "left" and start["tasks"][0]["train_split"] == "train"
    # Counted by split: the dataset's train and dev splits share its path.
    assert start["skipped"] == {f"dataset {saved_pairs}[train]": 2, f"dataset {saved_pairs}[validation]": 1}
    command("train", "--resume", run, code=0, cwd=elsewhere, HF_HOME=tmp_path / "hf", **OFFLINE)
    assert json.loads((run / "last" / "bertmtl.json").read_text())["step"] == 3
    evaluated = json.loads(command("evaluate", "--checkpoint", run / "last", "--json", code=0,
                                   HF_HOME=tmp_path / "hf", **OFFLINE).stdout)
    saved = json.loads((run / "last" / "metrics.json").read_text())
    assert evaluated["same_n"] == 11 and evaluated["same_acc"] == pytest.approx(saved["same_acc"])
    answer = json.loads(command("predict", "--checkpoint", run / "last", "--json", POSITIVE[0], POSITIVE[1],
                                code=0).stdout)
    same = answer["same"]  # answered with the dataset's class names
    assert same["label"] == ("differ", "agree")[same["index"]] and sum(same["probabilities"]) == pytest.approx(1)


@pytest.mark.slow
def test_column_flags_name_a_file_tasks_columns(tiny_bert_dir, tmp_path):
    """Headers no guesser reads: the flags name them, and the log says so."""
    for split, rows in (("train", 24), ("dev", 8)):
        with open(tmp_path / f"{split}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["opinion", "mood"])
            w.writerows([(POSITIVE if i % 2 else NEGATIVE)[i % 6], "up" if i % 2 else "down"] for i in range(rows))
    flag = f"mood:classification:{tmp_path / 'train.csv'}:{tmp_path / 'dev.csv'}"
    guessed = command("train", "--pretrained", tiny_bert_dir, "--out", tmp_path / "no", "--task", flag,
                      "--max-steps", "1", code=2, text=True)
    assert "cannot tell which column holds the text and the label (header: 'opinion', 'mood')" in guessed.stderr
    run = tmp_path / "run"
    r = command("train", "--pretrained", tiny_bert_dir, "--out", run, "--task", flag, "--text-column", "opinion",
                "--label-column", "mood", "--batch-size", "8", "--max-steps", "2", "--precision", "fp32", code=0,
                text=True)
    assert ("task mood (classification, train.csv): text from opinion, label from mood (labels down, up), "
            "no id column") in r.stderr + r.stdout
    assert json.loads((run / "last" / "metrics.json").read_text())["mood_n"] == 8
    # Column flags apply to --task declarations only.
    alone = command("train", "--label-column", "mood", "--max-steps", "1", code=2, text=True)
    assert "Error: --label-column names a column of the tasks declared with --task" in alone.stderr


def test_column_flags_without_a_task_are_a_config_error():
    from bertmtl import TrainConfig

    cfg = TrainConfig(text_column="opinion")
    with pytest.raises(ConfigError, match="^text_column names a column of the tasks declared with --task"):
        cfg.validate()
