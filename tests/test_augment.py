"""Augmentation: each method on fixture sentences (seeded), the output files, and the clear errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from click.testing import CliRunner

from bertmtl.data import augment as aug
from bertmtl.cli import main
from bertmtl.configuration.configs import AugmentConfig
from bertmtl.tasks import TASKS
from bertmtl.tasks.files import read_task_file


SENTENCES = [
    "the movie is very good and the acting is great .",
    "a man is playing a guitar on the stage tonight",
    "how do i learn python code fast ?",
    "what do dogs like to eat for food ?",
    "this film was boring and the plot was slow",
]


@pytest.fixture(scope="module")
def mlm_dir(tiny_bert_dir, small_data_dir, tmp_path_factory):
    """The tiny BERT with a (briefly trained) masked-LM head."""
    from bertmtl.training.loop import train
    from bertmtl.training.pretrain import pretrain_config
    from bertmtl.runs.progress import SilentReporter

    out = tmp_path_factory.mktemp("mlm") / "mlm"
    train(pretrain_config(data_dir=str(small_data_dir), out=str(out), encoder=str(tiny_bert_dir), max_steps=2,
                          batch_size=8, mlm_heldout=0.2, device="cpu"), reporter=SilentReporter())
    return out


def _method(name, mlm_dir=None):
    return aug.build_method(name, AugmentConfig(methods=[name], mlm=str(mlm_dir) if mlm_dir else None, aug_p=0.2,
                                                device="cpu"))


def _check_seeded(method):
    seeds = list(range(len(SENTENCES)))
    a = method.augment(SENTENCES, seeds)
    assert a == method.augment(SENTENCES, seeds)  # same seeds, same output
    assert a != method.augment(SENTENCES, [s + 100 for s in seeds])
    assert all(x != s for x, s in zip(a, SENTENCES))  # every sentence actually changed
    return a


@pytest.mark.slow
def test_swap_keeps_the_words_and_reorders_them():
    out = _check_seeded(_method("swap"))
    for new, old in zip(out, SENTENCES):
        # nlpaug capitalises a word swapped into first place (sentence case), hence lower().
        assert Counter(new.lower().split()) == Counter(old.split())


def test_delete_removes_words():
    out = _check_seeded(_method("delete"))
    for new, old in zip(out, SENTENCES):
        n, o = new.split(), old.split()
        assert 0 < len(n) < len(o) and not (Counter(n) - Counter(o))


def test_contextual_fills_masked_words_with_the_mlm(mlm_dir):
    method = _method("contextual", mlm_dir)
    out = _check_seeded(method)
    vocab = method.tokenizer.vocab
    for new, old in zip(out, SENTENCES):
        n, o = new.split(), old.split()
        assert len(n) == len(o)  # words are replaced one for one
        changed = [w for w, v in zip(n, o) if w != v]
        assert changed and all(w in vocab and w.isalpha() for w in changed)


@pytest.mark.skipif(aug.locate_wordnet() is None,
                    reason="WordNet is not installed (apt-get install wordnet-base, or nltk.download('wordnet')); "
                           "the synonym method needs it, the other methods are tested without it")
@pytest.mark.slow
def test_synonym_replaces_words_from_wordnet():
    pytest.importorskip("nltk", reason="the synonym method reads WordNet through nltk")
    method = _method("synonym")
    out = _check_seeded(method)
    reader = aug.wordnet_reader()
    for new, old in zip(out, SENTENCES):
        o = old.split()
        # Lemma names with underscores become several words, so compare what was replaced.
        assert len(new.split()) >= len(o)
        assert all(w in new.split() for w in set(o) & aug.STOPWORDS)  # function words are left alone
    assert reader.synsets("guitar")  # the reader really is WordNet


def test_wordnet_cache_gets_lexnames(tmp_path, monkeypatch):
    """Debian's wordnet-base lacks `lexnames`: the cache copy gets WordNet 3.0's 45 entries."""
    src = tmp_path / "wordnet"
    src.mkdir()
    for f in aug._WORDNET_NEEDED + ("noun.exc",):
        (src / f).write_text("x\n")
    monkeypatch.setenv("BERTMTL_HOME", str(tmp_path / "home"))
    built = aug.build_wordnet_cache(src)
    assert built == tmp_path / "home" / "nltk_data" / "corpora" / "wordnet"
    lines = [line.split("\t") for line in (built / "lexnames").read_text().splitlines()]
    assert len(lines) == 45 and [int(n) for n, _, _ in lines] == list(range(45))
    assert lines[0] == ["00", "adj.all", "3"] and lines[5] == ["05", "noun.animal", "1"]
    assert lines[29] == ["29", "verb.body", "2"] and lines[44] == ["44", "adj.ppl", "3"]
    assert (built / "noun.exc").read_text() == "x\n" and not (built / "noun.exc").is_symlink()
    assert aug.locate_wordnet() == ("cache", built)


def test_augment_writes_training_files(small_data_dir, tmp_path, tiny_bert_dir, mlm_dir):
    out = tmp_path / "aug"
    args = ["augment", "--data-dir", str(small_data_dir), "--out", str(out), "--times", "2", "--seed", "3",
            "--methods", "swap,delete,contextual", "--mlm", str(mlm_dir), "--device", "cpu"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "--augment" in r.output
    manifest = json.loads((out / "augment.json").read_text())
    for name, task in TASKS.items():
        orig = {e.id: e for e in read_task_file(small_data_dir / task.filename("train"), task).examples}
        f = read_task_file(out / task.filename("train"), task)  # the project's own reader accepts it
        assert not f.skipped
        ids = [e.id for e in f.examples]
        assert len(ids) == len(set(ids)) == manifest["tasks"][name]["copies"]
        assert manifest["tasks"][name]["copies"] + manifest["tasks"][name]["unchanged_dropped"] == 2 * len(orig)
        for e in f.examples:
            base, _, k = e.id.rpartition("-aug")
            assert k in ("1", "2") and e.label == orig[base].label  # labels kept
            assert (e.text_a, e.text_b) != (orig[base].text_a, orig[base].text_b)
        assert sum(manifest["tasks"][name]["by_method"].values()) == len(ids)
        assert all(v > 0 for v in manifest["tasks"][name]["by_method"].values())

    # Deterministic: the same command with the same seed writes the same bytes.
    again = tmp_path / "again"
    r = CliRunner().invoke(main, [*args[:4], str(again), *args[5:]])
    assert r.exit_code == 0, r.output
    for task in TASKS.values():
        assert (out / task.filename("train")).read_bytes() == (again / task.filename("train")).read_bytes()

    # ... and the directory feeds training.
    from bertmtl.sinks.metrics_log import read_records
    from bertmtl.runs.progress import SilentReporter
    from bertmtl.training.loop import TrainConfig, train

    run = tmp_path / "run"
    train(TrainConfig(data_dir=str(small_data_dir), out=str(run), encoder=str(tiny_bert_dir), augment=str(out),
                      epochs=1, steps_per_epoch=1, batch_size=8, smart=False, combine="sum", device="cpu"),
          reporter=SilentReporter())
    start = read_records(run / "metrics.jsonl")[0][0]
    for name in TASKS:
        n_orig = len(read_task_file(small_data_dir / TASKS[name].filename("train"), TASKS[name]).examples)
        assert start["examples"][name] == n_orig + manifest["tasks"][name]["copies"]


def _run(args):
    return CliRunner().invoke(main, ["augment", *args])


def test_backtranslation_is_a_clear_error(small_data_dir, tmp_path):
    r = _run(["--data-dir", str(small_data_dir), "--out", str(tmp_path / "o"), "--method", "backtranslation"])
    assert r.exit_code == 2 and "translation models" in r.output and "does not fetch translation models" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "o").exists()


def test_contextual_needs_an_mlm_head(small_data_dir, tmp_path, tiny_bert_dir):
    r = _run(["--data-dir", str(small_data_dir), "--out", str(tmp_path / "o"), "--methods", "contextual"])
    assert r.exit_code == 2 and "--mlm" in r.output and "bertmtl pretrain" in r.output
    r = _run(["--data-dir", str(small_data_dir), "--out", str(tmp_path / "o"), "--methods", "contextual",
              "--mlm", str(tiny_bert_dir)])
    assert r.exit_code == 2 and "no masked-LM head" in r.output and "bertmtl pretrain" in r.output
    assert not (tmp_path / "o").exists()


def test_missing_wordnet_is_a_clear_error(small_data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(aug, "locate_wordnet", lambda: None)
    monkeypatch.setattr(aug, "_READER", None)
    r = _run(["--data-dir", str(small_data_dir), "--out", str(tmp_path / "o"), "--methods", "swap,synonym"])
    assert r.exit_code == 2 and "WordNet is not installed" in r.output
    assert "apt-get install wordnet-base" in r.output and "nltk.download('wordnet')" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, msg", [
    (["--methods", "shuffle"], "unknown method"),
    (["--tasks", "nli"], "unknown task"),
    (["--times", "0"], "Invalid value for '--times'"),
])
def test_bad_options_are_usage_errors(args, msg, tmp_path):
    r = _run(["--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output
