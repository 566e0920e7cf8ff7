"""Further MLM pretraining, one more task through the training loop: masking, the head, the HF round
trip, the before/after report, resume after Ctrl-C and kill -9."""

from __future__ import annotations

import json
import math
import signal
import time

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from bertmtl.data.batching import MlmDataset, mask_tokens, replacement_ids
from bertmtl.cli import main
from bertmtl.data.mlm_text import balance, collect_texts, parse_amounts, split_heldout
from bertmtl.model.mlm import MaskedLMHead
from bertmtl.training.pretrain import report
from bertmtl.sinks.metrics_log import read_records
from bertmtl.tasks.files import TaskSource
from bertmtl.tasks import MLM
from bertmtl.encoders.tokenizer import EncoderTokenizer
from bertmtl.encoders.weights import load_mlm

from .conftest import spawn, tiny_config

PRETRAIN = ["--batch-size", "16", "--lr", "1e-3", "--heldout", "0.1", "--seed", "0", "--device", "cpu",
            "--precision", "fp32", "--log-every", "1"]


@pytest.fixture(scope="module")
def pretrained(tiny_bert_dir, data_dir, tmp_path_factory):
    """A 6-step pretraining run from the tiny BERT (which has no MLM head), through the CLI."""
    out = tmp_path_factory.mktemp("mlm") / "out"
    r = CliRunner().invoke(main, ["pretrain", "--encoder", str(tiny_bert_dir), "--data-dir", str(data_dir),
                                  "--out", str(out), "--max-steps", "6", *PRETRAIN])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return out, r.output


def test_masking_statistics(tiny_bert_dir):
    tok = EncoderTokenizer.from_dir(tiny_bert_dir)
    g = torch.Generator().manual_seed(0)
    allowed = replacement_ids(tok)
    n, t = 400, 128
    ids = allowed[torch.randint(len(allowed), (n, t), generator=g)]
    lengths = torch.randint(3, t + 1, (n,), generator=g)
    att = (torch.arange(t)[None, :] < lengths[:, None]).long()
    ids[:, 0] = tok.cls_id
    ids[torch.arange(n), lengths - 1] = tok.sep_id
    ids[att == 0] = tok.pad_id
    special = (att == 0) | (ids == tok.cls_id) | (ids == tok.sep_id)
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
    assert torch.equal(inputs[~chosen], ids[~chosen])  # unchosen tokens are never touched


def test_every_text_gets_a_masked_token_and_masks_do_not_depend_on_the_batch(tiny_bert_dir):
    tok = EncoderTokenizer.from_dir(tiny_bert_dir)
    data = MlmDataset(MLM, {"sst": ["a", "the movie is good .", "a bad film"], "sts": ["a man plays guitar"]}, tok,
                      seed=3)
    whole = data.batch([0, 1, 2, 3], pass_no=5)
    assert all((row != -100).sum() >= 1 for row in whole.labels)  # "a": its one token is always chosen
    alone = data.batch([2], pass_no=5)
    n = len(data.encoded[2].ids)
    assert torch.equal(whole.labels[2, :n], alone.labels[0, :n])  # the same mask in any batch
    assert not torch.equal(data.batch([0, 1, 2, 3], pass_no=6).labels, whole.labels)  # a new pass, new masks
    held = MlmDataset(MLM, {"sst": ["the movie is good ."]}, tok, seed=3, fixed=True)
    assert torch.equal(held.batch([0], pass_no=1).labels, held.batch([0], pass_no=2).labels)


def test_the_head_decodes_through_the_word_embeddings():
    from bertmtl.model import BertModel
    from bertmtl.model.heads import MultitaskBert

    torch.manual_seed(0)
    model = MultitaskBert(BertModel(tiny_config(60)), specs=(MLM,))
    emb = model.encoder.embeddings.word_embeddings.weight
    assert isinstance(model.mlm, MaskedLMHead) and not any("decoder" in k for k in model.state_dict())
    h = torch.randn(3, 32)
    logits = model.token_logits("mlm", h)
    assert torch.allclose(logits, model.mlm.transform(h) @ emb.T + model.mlm.bias, atol=1e-6)
    logits[0, 9].backward()
    assert emb.grad is not None and emb.grad[9].abs().sum() > 0  # the decoder is the embedding matrix


def test_pretrain_exports_for_transformers(pretrained, tmp_path):
    transformers = pytest.importorskip("transformers")
    out, _ = pretrained
    r = CliRunner().invoke(main, ["export", str(out), "--format", "hf", "--out", str(tmp_path / "hf")])
    assert r.exit_code == 0, r.output
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"] and config["model_type"] == "bert"
    ours = load_mlm(out)  # a run: its best checkpoint, with the head it trained
    assert ours.head_from_checkpoint
    model = ours.model.eval()
    hf = transformers.BertForMaskedLM.from_pretrained(str(tmp_path / "hf")).eval()
    assert hf.cls.predictions.decoder.weight.data_ptr() == hf.bert.embeddings.word_embeddings.weight.data_ptr()
    tok = EncoderTokenizer.from_dir(out / "best")
    b = tok(["the movie is very good .", "what do dogs eat ?", "a man is playing a guitar and people like it"])
    real = b.attention_mask.bool()
    with torch.no_grad():
        theirs = hf(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        mine = model.masked_logits("mlm", b.input_ids, b.attention_mask, real)
    assert (theirs[real] - mine).abs().max() < 1e-4
    # The run's encoder starts a training run (`--encoder RUN`): the same weights, the head left out.
    from bertmtl.model import BertModel

    enc = BertModel.from_pretrained(out / "best").eval()
    with torch.no_grad():
        assert torch.allclose(enc(b.input_ids, b.attention_mask).last_hidden_state[real],
                              model.encoder(b.input_ids, b.attention_mask).last_hidden_state[real], atol=1e-6)


def test_report_has_perplexity_before_and_after(pretrained):
    out, output = pretrained
    r = report(out)
    for key in ("initial", "before", "after"):
        assert r[key]["perplexity"] == pytest.approx(math.exp(r[key]["loss"]))
        assert r[key]["tokens"] > 0 and 0 <= r[key]["accuracy"] <= 1
    assert r["before"]["tokens"] == r["after"]["tokens"]  # the same masked held-out tokens
    assert r["head_steps"] == 1 and r["steps"] == 7  # 20% of 6 steps, head only, before them
    assert r["initial"]["step"] == 0 and r["before"]["step"] == 1 and r["after"]["step"] == 7
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_rows"] == 1  # the fixture's stray-quote Quora row, reported as in training
    start = read_records(out / "metrics.jsonl")[0][0]
    assert start["examples"]["mlm"] > 0 and start["config"]["mlm_text"] == ["sst", "quora", "sts", "imdb"]
    assert "perplexity" in output and "->" in output and "bertmtl train --encoder" in output


def test_head_steps_leave_the_encoder_as_it_was(tiny_bert_dir, data_dir, tmp_path):
    """During the head-only steps only the head learns: the encoder is what it was loaded as."""
    from bertmtl.model import BertModel
    from bertmtl.training.pretrain import pretrain_config
    from bertmtl.runs.progress import SilentReporter
    from bertmtl.training.loop import train

    train(pretrain_config(data_dir=str(data_dir), encoder=str(tiny_bert_dir), out=str(tmp_path / "run"),
                          max_steps=10, head_steps=3, stop_at_step=3, save_every=3, batch_size=16, precision="fp32"),
          reporter=SilentReporter())
    saved = load_file(str(tmp_path / "run" / "last" / "multitask.safetensors"))
    start = BertModel.from_pretrained(tiny_bert_dir).state_dict()
    assert all(torch.equal(saved[f"encoder.{k}"], v) for k, v in start.items())
    fresh = load_mlm(tiny_bert_dir).model.mlm.state_dict()
    assert not torch.equal(saved["mlm.transform.dense.weight"], fresh["transform.dense.weight"])


def test_a_python_resume_keeps_the_head_steps_the_run_started_with(tiny_bert_dir, data_dir, tmp_path):
    """train(fresh options, resume=RUN) from Python: the head-only steps resolved at the start (a fresh
    head: 2 of 10) stay, so the schedule does not shrink; the caller's options are left as given."""
    from bertmtl.training.pretrain import pretrain_config
    from bertmtl.runs.progress import SilentReporter
    from bertmtl.training.loop import train

    options = dict(data_dir=str(data_dir), encoder=str(tiny_bert_dir), out=str(tmp_path / "run"), max_steps=10,
                   batch_size=16, precision="fp32")
    first = pretrain_config(**options, stop_at_step=4)
    assert train(first, reporter=SilentReporter())["total_steps"] == 12 and first.head_steps is None
    again = pretrain_config(**options)
    done = train(again, resume=tmp_path / "run", reporter=SilentReporter())
    assert (done["status"], done["step"], done["total_steps"]) == ("finished", 12, 12) and again.head_steps is None


def test_load_mlm_reads_a_bert_base_style_head(tmp_path):
    """bert-base-uncased's pytorch_model.bin: gamma/beta names, a decoder.weight copy, decoder.bias only."""
    from bertmtl.model import BertModel
    from bertmtl.model.heads import MultitaskBert
    from bertmtl.model.mlm import mlm_hf_state_dict as hf_state_dict

    torch.manual_seed(0)
    cfg = tiny_config(60)
    src = MultitaskBert(BertModel(cfg), specs=(MLM,))
    with torch.no_grad():
        for p in src.mlm.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    state = {}
    for k, v in hf_state_dict(src).items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        state[k.replace("cls.predictions.bias", "cls.predictions.decoder.bias")] = v
    state["cls.predictions.decoder.weight"] = src.encoder.embeddings.word_embeddings.weight.detach().clone()
    state["cls.seq_relationship.weight"] = torch.zeros(2, cfg.hidden_size)  # NSP head: ignored
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    (tmp_path / "vocab.txt").write_text("\n".join(f"t{i}" for i in range(60)))
    loaded = load_mlm(tmp_path)
    assert loaded.head_from_checkpoint
    ids, att = torch.tensor([[2, 10, 20, 30, 3]]), torch.ones(1, 5, dtype=torch.long)
    pos = torch.ones(1, 5, dtype=torch.bool)
    with torch.no_grad():
        assert torch.allclose(loaded.model.eval().masked_logits("mlm", ids, att, pos),
                              src.eval().masked_logits("mlm", ids, att, pos), atol=1e-6)


def test_heldout_split_keeps_augmented_copies_of_heldout_text_out():
    texts = {"sst": [(f"s{i}", f"sentence {i}") for i in range(40)] + [(f"s{i}-aug1", f"reworded {i}")
                                                                         for i in range(40)]}
    train, held = split_heldout(texts, fraction=0.1, max_per=100, seed=0)
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
def test_bad_options_are_errors_before_any_work(args, msg, data_dir, tmp_path):
    r = CliRunner().invoke(main, ["pretrain", "--data-dir", str(data_dir), "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_existing_output_is_not_overwritten(pretrained, tiny_bert_dir, data_dir):
    out, _ = pretrained
    r = CliRunner().invoke(main, ["pretrain", "--encoder", str(tiny_bert_dir), "--data-dir", str(data_dir),
                                  "--out", str(out), "--steps", "1"])  # the hidden former name of --max-steps
    assert r.exit_code == 2 and "already holds a run" in r.output
    assert f"bertmtl pretrain --resume {out}" in r.output  # the command that made it, not train


def test_overwrite_replaces_an_earlier_run_and_nothing_else(pretrained, tiny_bert_dir, data_dir, tmp_path):
    import shutil

    run = tmp_path / "again"
    shutil.copytree(pretrained[0], run)
    args = ["pretrain", "--encoder", str(tiny_bert_dir), "--data-dir", str(data_dir), "--out", str(run),
            "--max-steps", "2", "--head-steps", "0", *PRETRAIN]
    r = CliRunner().invoke(main, [*args, "--overwrite"])
    assert r.exit_code == 0, r.output
    assert report(run)["steps"] == 2  # a new run, not the 7 steps copied there
    r = CliRunner().invoke(main, [*args[:-len(PRETRAIN)], "--overwrite", "--resume", str(run)])
    assert r.exit_code == 2 and "give one of them" in r.output
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    r = CliRunner().invoke(main, [*args[:6], str(mine), "--overwrite"])
    assert r.exit_code == 2 and "not a pretraining run" in r.output and (mine / "notes").is_dir()
    from bertmtl.runs.rundir import WriterLock

    lock = WriterLock(run)  # a process writing it
    try:
        r = CliRunner().invoke(main, [*args, "--overwrite"])
        assert r.exit_code == 2 and "is running" in r.output and report(run)["steps"] == 2
    finally:
        lock.release()


def test_report_of_outputs_that_are_not_runs(pretrained, tmp_path):
    """A checkpoint inside a run reports its run; a pre-0.2 output its pretrain.json; any other MLM
    directory has no scores."""
    out, _ = pretrained
    assert report(out / "best") == report(out)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "pretrain.json").write_text(json.dumps({"steps": 300, "head_steps": 60, "wall_s": 9.0,
                                                       "before": {"perplexity": 20.0}, "after": {"perplexity": 9.5}}))
    assert report(legacy) == {"steps": 300, "head_steps": 60, "before": {"perplexity": 20.0},
                              "after": {"perplexity": 9.5}}
    assert report(tmp_path) == {"steps": None, "head_steps": 0}


def test_evaluate_refuses_a_masked_lm_only_checkpoint(pretrained):
    r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(pretrained[0])])
    assert r.exit_code == 2 and "only a masked-LM task" in r.output and "mlm_perplexity.py" in r.output, r.output


def test_pretrain_help_states_its_own_defaults():
    import re

    r = CliRunner().invoke(main, ["pretrain", "--help"], terminal_width=200)
    assert r.exit_code == 0
    text = re.sub(r"\s+", " ", r.output)
    assert "--runs-dir" not in text  # pretrain writes --out, never a new run under the runs root
    import click

    command = main.get_command(click.Context(main), "pretrain")
    ctx = click.Context(command, info_name="pretrain")
    records = {p.name: " ".join(p.get_help_record(ctx)) for p in command.params if p.get_help_record(ctx)}
    out, head_lr = records["out"], records["head_lr"]
    assert out.count("default") == 1 and "[default: pretrained-mlm]" in out
    assert head_lr.count("default") == 1 and "[default: 0.001" in head_lr
    assert "declared tasks' text with --task" in text


def test_vocabulary_without_mask_token_is_a_clear_error(tmp_path, data_dir):
    from .conftest import write_tiny_bert

    d = write_tiny_bert(tmp_path / "nomask")
    vocab = [t for t in (d / "vocab.txt").read_text().splitlines() if t != "[MASK]"] + ["[unused0]"]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    r = CliRunner().invoke(main, ["pretrain", "--encoder", str(d), "--data-dir", str(data_dir),
                                  "--out", str(tmp_path / "o"), "--max-steps", "1"])
    assert r.exit_code == 2 and "no [MASK] token" in r.output


def test_augmented_text_is_added(data_dir, tmp_path):
    from bertmtl.data.augment import write_task_rows
    from bertmtl.tasks.files import read_task_file
    from bertmtl.tasks import TASKS

    sst = read_task_file(data_dir / "ids-sst-train.csv", TASKS["sst"]).examples[:5]
    for e in sst:
        e.id, e.text_a = e.id + "-aug1", "reworded " + e.text_a
    write_task_rows(tmp_path / "ids-sst-train.csv", TASKS["sst"], sst)
    sources = {"sst": TASKS["sst"], "quora": TASKS["para"]}
    texts, _ = collect_texts(sources, TaskSource(data_dir, augment=tmp_path))
    assert sum(i.endswith("-aug1") for i, _ in texts["sst"]) == 5 and len(texts["sst"]) == 96 + 5
    assert not any(i.endswith("-aug1") for i, _ in texts["quora"])
    train, held = split_heldout(texts, 0.5, 100, seed=0)
    reworded = {t for i, t in texts["sst"] if i.endswith("-aug1")}
    in_train = {t for t in train["sst"] if t.startswith("reworded ")}
    dropped = {"reworded " + t for t in held["sst"]} & reworded  # copies of held-out text
    assert in_train | dropped == reworded and not in_train & dropped and dropped


def test_declared_tasks_give_their_text(data_dir, tmp_path):
    (tmp_path / "reviews.csv").write_text("text,label\n" + "".join(f"a fine film {i},good\nawful {i},bad\n"
                                                                      for i in range(20)))
    r = CliRunner().invoke(main, ["pretrain", "--task", f"reviews:classification:{tmp_path / 'reviews.csv'}",
                                  "--out", str(tmp_path / "o"), "--print-config", "json"])
    cfg = json.loads(r.output)
    assert r.exit_code == 0 and cfg["mlm_text"] == ["reviews"] and cfg["mlm_only"] and cfg["tasks"] == []


# -- the training loop's guarantees, for pretraining too ------------------------------------------

def _weights(run):
    return load_file(str(run / "last" / "multitask.safetensors"))


@pytest.mark.slow
def test_pretraining_resumes_after_ctrl_c_and_kill_9_as_if_uninterrupted(tiny_bert_dir, data_dir, tmp_path):
    # A long schedule (the run is stopped well before its end), two head-only steps, a save every 2.
    common = ["pretrain", "--encoder", str(tiny_bert_dir), "--data-dir", str(data_dir), "--max-steps", "5000",
              "--head-steps", "2", "--save-every", "2", "--dropout", "0", *PRETRAIN]

    def run(args):  # every part in a process of one thread: the same sums in the same order
        proc = spawn(*args)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]

    def uninterrupted(name: str, stop: int):
        run([*common, "--out", str(tmp_path / name), "--stop-at-step", str(stop)])
        return _weights(tmp_path / name)

    # Ctrl-C: a clean stop, said at once (exit 130, last/ saved), then --resume a few steps on.
    stopped = tmp_path / "stopped"
    proc = spawn(*common, "--out", str(stopped))
    t0 = time.time()
    while not (stopped / "last" / "bertmtl.json").exists():
        assert proc.poll() is None and time.time() - t0 < 120, proc.stderr.read().decode()[-2000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert b"Ctrl-C: stopping after this step" in err and b"Resume with: bertmtl pretrain --resume" in err
    step = json.loads((stopped / "last" / "bertmtl.json").read_text())["step"]
    run(["pretrain", "--resume", str(stopped), "--stop-at-step", str(step + 3)])
    a, b = uninterrupted("whole", step + 3), _weights(stopped)
    assert all(torch.equal(a[k], b[k]) for k in a)

    # kill -9 inside step 7, then --resume to step 10.
    killed = tmp_path / "killed"
    proc = spawn(*common, "--out", str(killed), "--stop-at-step", "10", BERTMTL_CRASH_AT="step:7")
    proc.wait(120)
    assert proc.returncode == -signal.SIGKILL
    run(["pretrain", "--resume", str(killed)])
    a, b = uninterrupted("whole10", 10), _weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    for run in (stopped, killed):
        assert [r["type"] for r in read_records(run / "metrics.jsonl")[0]].count("resume") == 1


def test_a_run_with_masked_lm_beside_its_tasks_evaluates_the_tasks(tiny_bert_dir, data_dir, tmp_path):
    """Masked LM as an auxiliary task (--mlm-text) is scored while it trains; evaluate scores the rest."""
    run = tmp_path / "aux"
    r = CliRunner().invoke(main, ["train", "--encoder", str(tiny_bert_dir), "--data-dir", str(data_dir), "--out",
                                  str(run), "--tasks", "sst", "--mlm-text", "sst", "--max-steps", "2", *PRETRAIN[:-4]])
    assert r.exit_code == 0, r.output
    evals = [e for e in read_records(run / "metrics.jsonl")[0] if e["type"] == "eval"]
    assert MLM.metric_key("perplexity") in evals[-1]
    r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(run), "--data-dir", str(data_dir), "--json"])
    assert r.exit_code == 0, r.output
    scores = json.loads(r.stdout)
    assert 0 <= scores["sst_acc"] <= 1 and not [k for k in scores if "mlm" in k]
