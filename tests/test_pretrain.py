"""Further MLM pretraining: masking statistics, tied weights, HF round trip, the before/after report."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from bertmtl.cli import main
from bertmtl.model.mlm import BertForMaskedLM, load_mlm
from bertmtl.pretrain import (MlmTexts, balance, evaluate_mlm, mask_tokens, parse_amounts, replacement_ids,
                              special_mask, split_heldout)
from bertmtl.tokenizer import WordPieceTokenizer

from .conftest import tiny_config
from .fixtures import write_task_data


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_task_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def pretrained(tiny_bert_dir, data_dir, tmp_path_factory):
    """A 6-step pretraining run from the tiny BERT (which has no MLM head), through the CLI."""
    out = tmp_path_factory.mktemp("mlm") / "out"
    r = CliRunner().invoke(main, ["pretrain", "--pretrained", str(tiny_bert_dir), "--data-dir", str(data_dir),
                                  "--out", str(out), "--max-steps", "6", "--batch-size", "16", "--lr", "1e-3",
                                  "--heldout", "0.1", "--seed", "0", "--device", "cpu"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return out, r.output


def test_masking_statistics(tiny_bert_dir):
    tok = WordPieceTokenizer.from_dir(tiny_bert_dir)
    g = torch.Generator().manual_seed(0)
    allowed = replacement_ids(tok)
    n, t = 400, 128
    ids = allowed[torch.randint(len(allowed), (n, t), generator=g)]
    lengths = torch.randint(3, t + 1, (n,), generator=g)
    att = (torch.arange(t)[None, :] < lengths[:, None]).long()
    ids[:, 0] = tok.cls_id
    ids[torch.arange(n), lengths - 1] = tok.sep_id
    ids[att == 0] = tok.pad_id
    special = special_mask(ids, att, tok)
    inputs, labels = mask_tokens(ids, special, tok.mask_id, allowed, torch.Generator().manual_seed(1), 0.15)

    chosen = labels != -100
    real = int((~special).sum())
    assert real > 20_000
    assert abs(chosen.sum().item() / real - 0.15) < 0.01  # ~0.0023 standard error
    assert not chosen[special].any()  # never [CLS], [SEP] or padding
    assert torch.equal(inputs[special], ids[special])
    assert torch.equal(labels[chosen], ids[chosen])
    k = chosen.sum().item()
    masked = (inputs[chosen] == tok.mask_id).sum().item() / k
    kept = (inputs[chosen] == ids[chosen]).sum().item() / k
    replaced = 1 - masked - kept
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.015 and abs(replaced - 0.1) < 0.015
    swapped_in = inputs[chosen & (inputs != tok.mask_id)]
    specials = {tok.cls_id, tok.sep_id, tok.pad_id, tok.mask_id, tok.vocab["[UNK]"]}
    assert not any(int(i) in specials for i in swapped_in)
    # Unchosen tokens are never touched.
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_masking_always_chooses_one_token(tiny_bert_dir):
    tok = WordPieceTokenizer.from_dir(tiny_bert_dir)
    b = tok(["a"])  # [CLS] a [SEP]: one candidate, usually not drawn at 15%
    for seed in range(20):
        _, labels = mask_tokens(b.input_ids, special_mask(b.input_ids, b.attention_mask, tok), tok.mask_id,
                                replacement_ids(tok), torch.Generator().manual_seed(seed))
        assert (labels != -100).sum() == 1 and labels[0, 1] == b.input_ids[0, 1]


def test_decoder_is_tied_to_word_embeddings():
    model = BertForMaskedLM(tiny_config(60))
    emb = model.bert.embeddings.word_embeddings.weight
    dec = model.cls.predictions.decoder.weight
    assert dec is emb and dec.data_ptr() == emb.data_ptr()
    before = emb.detach().clone()
    logits = model(torch.tensor([[2, 7, 8, 3]]))
    logits[0, 1, 9].backward()
    # A step on the decoder alone moves the embedding matrix: they are one tensor.
    torch.optim.SGD(model.cls.predictions.decoder.parameters(), lr=1.0).step()
    assert not torch.equal(emb.detach(), before)
    assert "cls.predictions.decoder.weight" not in model.hf_state_dict()  # stored once, as HF does
    assert model.cls.predictions.bias.shape == (60,)


def test_pretrain_output_round_trips_through_hf(pretrained):
    transformers = pytest.importorskip("transformers")
    out, _ = pretrained
    for f in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "pretrain.json"):
        assert (out / f).is_file(), f
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"] and config["model_type"] == "bert"

    ours = load_mlm(out)
    assert ours.head_from_checkpoint  # the head it trained is reused, not re-initialised
    model = ours.model.eval()
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    hf = transformers.BertForMaskedLM.from_pretrained(str(out)).eval()
    assert hf.cls.predictions.decoder.weight.data_ptr() == hf.bert.embeddings.word_embeddings.weight.data_ptr()
    tok = WordPieceTokenizer.from_dir(out)
    b = tok(["the movie is very good .", "what do dogs eat ?", "a man is playing a guitar and people like it"])
    with torch.no_grad():
        theirs = hf(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        mine = model(b.input_ids, b.attention_mask)
    real = b.attention_mask.bool()
    assert (theirs[real] - mine[real]).abs().max() < 1e-4

    # The same directory is a plain BERT for `bertmtl train --pretrained` (the cls.* keys are skipped).
    from bertmtl.model import BertModel

    enc = BertModel.from_pretrained(out).eval()
    with torch.no_grad():
        h = enc(b.input_ids, b.attention_mask).last_hidden_state
        h_mlm = model.bert(b.input_ids, b.attention_mask).last_hidden_state
    assert torch.allclose(h[real], h_mlm[real], atol=1e-6)


def test_report_has_perplexity_before_and_after(pretrained):
    out, output = pretrained
    r = json.loads((out / "pretrain.json").read_text())
    for key in ("initial", "before", "after"):
        assert r[key]["perplexity"] == pytest.approx(math.exp(r[key]["loss"]))
        assert r[key]["tokens"] > 0 and set(r[key]["datasets"]) == {"sst", "quora", "sts"}
    assert r["before"]["tokens"] == r["after"]["tokens"]  # the same masked held-out tokens
    assert r["head"] == "initialised" and r["head_steps"] == 1  # 20% of 6 steps, head only
    assert r["steps"] == 6 and r["wall_s"] > 0 and len(r["train_loss"]) >= 1
    assert r["texts"]["quora"]["heldout"] > 0 and r["texts"]["quora"]["train"] > 0
    assert r["skipped_rows"] == 1  # the fixture's stray-quote Quora row, reported as in training
    assert "perplexity" in output and "->" in output and "bertmtl train --encoder" in output


def test_heldout_masks_are_fixed(tiny_bert_dir):
    tok = WordPieceTokenizer.from_dir(tiny_bert_dir)
    data = MlmTexts({"sst": ["the movie is good .", "a bad film"], "sts": ["a man plays guitar"]}, tok)
    model = BertForMaskedLM(tiny_config(tok.vocab_size))
    a = evaluate_mlm(model, data, 2, torch.device("cpu"), seed=5, quiet=True)
    b = evaluate_mlm(model, data, 2, torch.device("cpu"), seed=5, quiet=True)
    assert a == b and a["tokens"] == a["datasets"]["sst"]["tokens"] + a["datasets"]["sts"]["tokens"]


def test_load_mlm_reads_a_bert_base_style_head(tmp_path):
    """bert-base-uncased's pytorch_model.bin: gamma/beta names, a decoder.weight copy, decoder.bias only."""
    torch.manual_seed(0)
    cfg = tiny_config(60)
    src = BertForMaskedLM(cfg)
    with torch.no_grad():
        for p in src.cls.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    state = {}
    for k, v in src.hf_state_dict().items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        state[k.replace("cls.predictions.bias", "cls.predictions.decoder.bias")] = v
    state["cls.predictions.decoder.weight"] = src.bert.embeddings.word_embeddings.weight.detach().clone()
    state["cls.seq_relationship.weight"] = torch.zeros(2, cfg.hidden_size)  # NSP head: ignored
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    loaded = load_mlm(tmp_path)
    assert loaded.head_from_checkpoint
    ids = torch.tensor([[2, 10, 20, 30, 3]])
    with torch.no_grad():
        assert torch.allclose(loaded.model.eval()(ids), src.eval()(ids), atol=1e-6)


def test_heldout_split_keeps_augmented_copies_of_heldout_text_out():
    original = {"sst": [(f"s{i}", f"sentence {i}") for i in range(40)]}
    extra = {"sst": [(f"s{i}-aug1", f"reworded {i}") for i in range(40)]}
    train, held = split_heldout(original, extra, fraction=0.1, max_per=100, seed=0)
    assert len(held["sst"]) == 4 and len(train["sst"]) == 36 + 36
    held_ids = {t.split()[1] for t in held["sst"]}
    assert not any(t.startswith("reworded") and t.split()[1] in held_ids for t in train["sst"])


def test_balance_caps_and_upsamples():
    train = {"quora": [f"q{i}" for i in range(100)], "sts": [f"s{i}" for i in range(10)]}
    out = balance(train, caps={"quora": 30}, upsample={"sts": 2.5}, seed=0)
    assert len(out["quora"]) == 30 and len(set(out["quora"])) == 30
    assert len(out["sts"]) == 25 and set(out["sts"]) == set(train["sts"])
    assert balance(train, {"quora": 30}, {}, 0) == balance(train, {"quora": 30}, {}, 0)
    assert parse_amounts(("quora=5000,sst=10", "para=7"), "--cap", True) == {"quora": 7, "sst": 10}


@pytest.mark.parametrize("args, msg", [
    (["--cap", "quora:5"], "expected DATASET=N"),
    (["--cap", "nli=5"], "unknown dataset"),
    (["--upsample", "sts=0.5"], "factor >= 1"),
    (["--datasets", "wiki"], "unknown dataset"),
])
def test_bad_options_are_usage_errors(args, msg):
    r = CliRunner().invoke(main, ["pretrain", *args])
    assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output


def test_existing_output_is_not_overwritten(pretrained, tiny_bert_dir, data_dir):
    out, _ = pretrained
    r = CliRunner().invoke(main, ["pretrain", "--pretrained", str(tiny_bert_dir), "--data-dir", str(data_dir),
                                  "--out", str(out), "--steps", "1"])  # the hidden former name of --max-steps
    assert r.exit_code == 2 and "already holds files" in r.output and "--overwrite" in r.output


def test_vocabulary_without_mask_token_is_a_clear_error(tmp_path, data_dir):
    from .conftest import write_tiny_bert

    d = write_tiny_bert(tmp_path / "nomask")
    vocab = [t for t in (d / "vocab.txt").read_text().splitlines() if t != "[MASK]"] + ["[unused0]"]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    r = CliRunner().invoke(main, ["pretrain", "--pretrained", str(d), "--data-dir", str(data_dir),
                                  "--out", str(tmp_path / "o"), "--steps", "1"])
    assert r.exit_code == 2 and "no [MASK] token" in r.output


def test_augmented_text_is_added(data_dir, tmp_path):
    from bertmtl.augment import write_task_rows
    from bertmtl.data import TASKS, read_task_file
    from bertmtl.pretrain import collect_texts

    sst = read_task_file(data_dir / "ids-sst-train.csv", TASKS["sst"]).examples[:5]
    for e in sst:
        e.id, e.text_a = e.id + "-aug1", "reworded " + e.text_a
    write_task_rows(tmp_path / "ids-sst-train.csv", "sst", sst)
    original, extra = collect_texts(data_dir, ["sst", "quora"], tmp_path)
    assert len(extra["sst"]) == 5 and "quora" not in extra and len(original["sst"]) == 96
    train, held = split_heldout(original, extra, 0.5, 100, seed=0)
    reworded = {t for _, t in extra["sst"]}
    in_train = {t for t in train["sst"] if t.startswith("reworded ")}
    dropped = {"reworded " + t for t in held["sst"]} & reworded  # copies of held-out text
    assert in_train | dropped == reworded and not in_train & dropped and dropped
    r = CliRunner().invoke(main, ["pretrain", "--data-dir", str(data_dir), "--augmented", str(tmp_path / "none")])
    assert r.exit_code == 2 and "no such directory" in r.output and "bertmtl augment" in r.output
