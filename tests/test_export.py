"""`bertmtl export`: each format loads in its target tool and gives our numbers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bertmtl.runs.checkpoint import load_checkpoint, save_checkpoint
from bertmtl.cli import main
from bertmtl.errors import UserError
from bertmtl.inference.export import export
from bertmtl.inference.predict import Item, Predictor

from .conftest import REAL_PAIRS, REAL_SENTENCES

transformers = pytest.importorskip("transformers")

SENTENCES = REAL_SENTENCES[:8] + ["the movie was good", "x"]


@pytest.fixture(scope="module", params=["bert", "mpnet"])
def run(request, data_dir, tmp_path_factory):
    """A run of each encoder family, trained two steps (with a dev evaluation, for the card)."""
    encoder = request.getfixturevalue("tiny_bert_dir" if request.param == "bert" else "tiny_mpnet_dir")
    out = tmp_path_factory.mktemp(f"xrun-{request.param}") / "run"
    r = CliRunner().invoke(main, ["train", "--encoder", str(encoder), "--data-dir", str(data_dir), "--out", str(out),
                                  "--max-steps", "2", "--eval-every", "2", "--batch-size", "8", "--lr", "1e-3"])
    assert r.exit_code == 0, r.output
    return out


def _with_pooling(run, pooling, tmp_path):
    """A copy of the run's best checkpoint whose heads pool another way."""
    ck = load_checkpoint(run / "best")
    ck.model.cfg.pooling = pooling
    save_checkpoint(tmp_path / pooling, ck.model, ck.tokenizer, step=1, epoch=0.1, train_args=ck.train_args,
                    metrics=ck.metrics, tasks=ck.tasks)
    return tmp_path / pooling


def test_hf_export_loads_in_transformers_with_our_hidden_states(run, tmp_path):
    out = export(run, "hf", tmp_path / "hf", command="bertmtl export RUN --format hf --out hf")
    hf, info = transformers.AutoModel.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    ck = load_checkpoint(run / "best")
    assert type(hf).__name__ == ck.model.encoder.config.family.architecture
    batch = ck.tokenizer(SENTENCES)
    with torch.no_grad():
        ours = ck.model.encoder(batch.input_ids, batch.attention_mask, batch.token_type_ids).last_hidden_state
        theirs = hf.eval()(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    real = batch.attention_mask.bool()
    assert (ours[real] - theirs[real]).abs().max() <= 1e-5

    # AutoTokenizer gives our ids, for sentences and for pairs (token types included).
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    assert tok(SENTENCES, truncation=True)["input_ids"] == [e.ids for e in ck.tokenizer.encode(SENTENCES)]
    a, b = zip(*REAL_PAIRS)
    enc = tok(list(a), list(b), truncation=True)
    ours_pairs = ck.tokenizer.encode(list(a), list(b))
    assert enc["input_ids"] == [e.ids for e in ours_pairs]
    if "token_type_ids" in enc:
        assert enc["token_type_ids"] == [e.type_ids for e in ours_pairs]


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_sentence_transformers_export_encodes_our_embeddings(run, pooling, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    source = run if pooling == "mean" else _with_pooling(run, pooling, tmp_path)
    out = export(source, "sentence-transformers", tmp_path / "st")
    for f in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        assert (out / f).is_file()
    model = st.SentenceTransformer(str(out), device="cpu")
    theirs = model.encode(SENTENCES, convert_to_tensor=True)
    predictor = Predictor(source, precision="fp32", device="cpu")  # sentence-transformers computes in fp32
    ours = predictor.encode(SENTENCES, batch_size=3)  # the public call, batched otherwise than theirs
    assert theirs.shape == ours.shape and (theirs - ours).abs().max() <= 1e-5
    unit = predictor.encode(SENTENCES, normalize=True)
    normed = model.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=True)
    assert (unit - normed).abs().max() <= 1e-5 and torch.allclose(unit.norm(dim=-1), torch.ones(len(SENTENCES)))
    one = predictor.encode(SENTENCES[0])
    assert one.shape == (ours.shape[1],) and (one - ours[0]).abs().max() <= 1e-6


@pytest.mark.slow
def test_onnx_export_answers_what_predict_answers(run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = export(run, "onnx", tmp_path / "onnx")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    predictor = Predictor(run, precision="fp32")  # the ONNX session computes in fp32
    tok, model = predictor.tokenizer, predictor.model
    # A batch size and lengths unlike those of the export's example inputs.
    pairs = REAL_PAIRS + [("the movie was good", "a film is great and fun to watch")]
    a, b = tok([p[0] for p in pairs]), tok([p[1] for p in pairs])
    feed = {"input_ids_1": a.input_ids.numpy(), "attention_mask_1": a.attention_mask.numpy(),
            "input_ids_2": b.input_ids.numpy(), "attention_mask_2": b.attention_mask.numpy()}
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, feed)))
    # The tokenizer shipped beside the graph (the model card's recipe) makes the same inputs.
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    for n, side in (("1", 0), ("2", 1)):
        enc = hf_tok([p[side] for p in pairs], padding=True, truncation=True, return_tensors="np")
        assert (enc["input_ids"] == feed[f"input_ids_{n}"]).all()
        assert (enc["attention_mask"] == feed[f"attention_mask_{n}"]).all()
    with torch.inference_mode():
        u = predictor._embed([e.ids for e in tok.encode([p[0] for p in pairs])])
        v = predictor._embed([e.ids for e in tok.encode([p[1] for p in pairs])])
        want = {"embedding1": u, "embedding2": v,
                "sentiment1": model.postprocess("sst", model.head_output("sst", u)),
                "sentiment2": model.postprocess("sst", model.head_output("sst", v)),
                "paraphrase_prob": model.postprocess("para", model.head_output("para", u, v)),
                "similarity": model.postprocess("sts", model.head_output("sts", u, v))}
    assert set(names) == set(want)
    for k, w in want.items():
        assert got[k].shape == tuple(w.shape) and abs(got[k] - w.numpy()).max() <= 1e-4, k
    # ... and what `predict` prints, within its rounding
    answers = list(predictor.answers([Item(i, x, y) for i, (x, y) in enumerate(pairs)]))
    for i, ans in enumerate(answers):
        assert abs(ans["paraphrase_prob"] - got["paraphrase_prob"][i]) <= 1e-4
        assert abs(ans["similarity"] - got["similarity"][i]) <= 1e-4 + 5e-5
        assert ans["sentiment1"]["index"] == int(got["sentiment1"][i].argmax())


def test_model_card_says_what_where_from_and_how(run, tmp_path):
    out = export(run, "hf", tmp_path / "hf", command="bertmtl export RUN --format hf --out hf")
    card = (out / "README.md").read_text()
    args = json.loads((run / "best" / "train_args.json").read_text())
    metrics = json.loads((run / "best" / "metrics.json").read_text())
    # where from, without this machine's paths: a local directory shows as .../NAME
    assert args["encoder"] not in card and args["data_dir"] not in card
    assert f"`.../{Path(args['encoder']).name}`" in card and f"`.../{Path(args['data_dir']).name}`" in card
    assert f"{metrics['sst_acc']:.4f}" in card and "overall" in card
    assert "bertmtl export RUN --format hf --out hf" in card and '"lr": 0.001' in card


@pytest.mark.slow
def test_cli_export_of_a_run_and_refusals(run, tmp_path, monkeypatch):
    r = CliRunner().invoke(main, ["export", str(run), "--format", "hf", "--out", str(tmp_path / "e")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "e" / "model.safetensors").is_file()
    card = (tmp_path / "e" / "README.md").read_text()
    assert "--format hf" in card
    r = CliRunner().invoke(main, ["export", str(run), "--format", "hf", "--out", str(tmp_path / "e")])
    assert r.exit_code == 2 and "already holds files" in r.output
    r = CliRunner().invoke(main, ["export", str(run), "--format", "hf", "--out", str(tmp_path / "e"), "--overwrite"])
    assert r.exit_code == 0, r.output
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(UserError, match=r'pip install -e "\.\[onnx\]"'):
        export(run, "onnx", tmp_path / "o")


@pytest.mark.slow
def test_onnx_export_of_a_cross_encoder(tiny_bert_dir, data_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    run = tmp_path / "cross"
    r = CliRunner().invoke(main, ["train", "--encoder", str(tiny_bert_dir), "--data-dir", str(data_dir), "--out", str(run),
                                  "--pair-mode", "cross", "--max-steps", "1", "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    out = export(run, "onnx", tmp_path / "onnx")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    predictor = Predictor(run, precision="fp32")  # the ONNX session computes in fp32
    tok = predictor.tokenizer
    a, b = zip(*REAL_PAIRS)
    s1, s2, p = tok(list(a)), tok(list(b)), tok(list(a), list(b))
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {
        "input_ids_1": s1.input_ids.numpy(), "attention_mask_1": s1.attention_mask.numpy(),
        "input_ids_2": s2.input_ids.numpy(), "attention_mask_2": s2.attention_mask.numpy(),
        "pair_input_ids": p.input_ids.numpy(), "pair_attention_mask": p.attention_mask.numpy(),
        "pair_token_type_ids": p.token_type_ids.numpy()})))
    for i, ans in enumerate(predictor.answers([Item(i, x, y) for i, (x, y) in enumerate(REAL_PAIRS)])):
        assert abs(ans["paraphrase_prob"] - got["paraphrase_prob"][i]) <= 1e-4
        assert abs(ans["similarity"] - got["similarity"][i]) <= 1e-4 + 5e-5
        assert max(abs(x - y) for x, y in zip(ans["sentiment2"]["probabilities"], got["sentiment2"][i])) <= 1e-4


def test_model_card_metadata_reads_back_through_huggingface_hub(run, tmp_path):
    """The card's YAML metadata, as the Hub and huggingface_hub read it: base model, pipeline tag,
    datasets, the dev metrics as eval results."""
    from huggingface_hub import ModelCard

    out = export(run, "sentence-transformers", tmp_path / "st")
    card = ModelCard.load(out / "README.md")
    metrics = json.loads((run / "best" / "metrics.json").read_text())
    data = card.data
    assert data.pipeline_tag == "sentence-similarity" and "bertmtl" in data.tags
    assert data.base_model is None  # the tiny test encoder is a local directory, not a Hub model
    assert data.datasets == ["nyu-mll/glue", "stanfordnlp/sst"]
    results = {(r.dataset_type, r.metric_type, r.dataset_name): r.metric_value for r in data.eval_results}
    assert results[("stanfordnlp/sst", "accuracy", "SST (CS224N dev)")] == round(metrics["sst_acc"], 4)
    assert results[("nyu-mll/glue", "pearsonr", "STS (CS224N dev)")] == round(metrics["sts_corr"], 4)
    assert all(len(repr(r.metric_value)) <= 6 for r in data.eval_results)  # 0.3900, never float32's 0.38999998...
    assert "## Dev metrics" in card.text
    text = (out / "README.md").read_text()  # a card that leaves the machine names no local absolute path
    assert str(tmp_path) not in text and str(run.resolve()) not in text and str(run.parent.resolve()) not in text
    assert f"from `{run.name}/best`" in text


def test_model_card_names_the_built_in_base_model_and_its_license(run, tmp_path):
    from types import SimpleNamespace

    from bertmtl.inference.export import card_metadata

    ck = SimpleNamespace(train_args={"encoder": "minilm"}, path=tmp_path / "r" / "best", tasks=[], model=None,
                         metrics={})
    data = card_metadata(ck, "hf")
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2" and data.license == "apache-2.0"
    ck.train_args = {"encoder": "org/bert-small@main", "encoder_revision": "a" * 40}
    data = card_metadata(ck, "hf")
    assert data.base_model == "org/bert-small" and data.base_model_revision == "a" * 40 and data.license is None
