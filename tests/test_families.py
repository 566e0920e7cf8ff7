"""Every encoder family through our one encoder, against transformers on tiny random models
saved by `save_pretrained`: hidden states, gradients and token ids; then the whole tool (train,
resume, predict, export, pretrain) on each."""

from __future__ import annotations

import json

import pytest
import torch

from bertmtl.encoders.config import FAMILIES
from bertmtl.model import BertModel
from bertmtl.model.loading import from_hf_key, to_hf_key
from bertmtl.encoders.tokenizer import EncoderTokenizer

from .conftest import REAL_PAIRS, REAL_SENTENCES, assert_grads_match_hf, cli
from .families import FAMILY_NAMES, write_tiny_family

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def family_dir(request, tmp_path_factory):
    return write_tiny_family(tmp_path_factory.mktemp(request.param), request.param)


def _hf_forward(hf, b, family):
    kw = {"token_type_ids": b.token_type_ids} if family.token_types else {}
    return hf(input_ids=b.input_ids, attention_mask=b.attention_mask, **kw)


def _batches(tok):
    yield tok(REAL_SENTENCES)
    a, b = zip(*REAL_PAIRS)
    yield tok(list(a), list(b))


def test_config_reads_the_family(family_dir):
    model = BertModel.from_pretrained(family_dir)
    c, family = model.config, model.config.family
    hf_config = json.loads((family_dir / "config.json").read_text())
    assert c.model_type == hf_config["model_type"] and c.hidden_size == 32 and c.num_hidden_layers == 2
    assert (model.pooler is not None) == family.pooler
    assert (model.embeddings.token_type_embeddings is not None) == family.token_types
    assert (model.embeddings_project is not None) == (c.model_type == "electra")  # embedding_size 16 < 32
    assert (model.encoder.disentangled is not None) == family.disentangled  # DeBERTa's relative attention
    assert (model.embeddings.position_embeddings is None) == (hf_config.get("position_biased_input") is False)
    again = c.to_dict()  # config.json's own names back (DistilBERT's dim, n_layers, ...)
    assert {k: again[k] for k in hf_config if k in again and k != "architectures"} == \
        {k: hf_config[k] for k in hf_config if k in again and k != "architectures"}
    assert again["architectures"] == [family.architecture]


def test_key_map_round_trip(family_dir):
    from safetensors.torch import load_file

    family = BertModel.from_pretrained(family_dir).config.family
    hf_keys = set(load_file(str(family_dir / "model.safetensors")))
    ours = set(BertModel.from_pretrained(family_dir).state_dict())
    assert {from_hf_key(k, family) for k in hf_keys} == ours
    assert {to_hf_key(k, family) for k in ours} == hf_keys


@pytest.mark.parametrize("unpad", [False, True])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_parity_with_transformers(family_dir, impl, unpad):
    """Padded sentences and pairs: the last hidden state (and the pooler, where there is one)
    within 1e-5 of transformers' at every real token."""
    ours = BertModel.from_pretrained(family_dir).eval()
    ours.set_attention(impl)
    family = ours.config.family
    hf = transformers.AutoModel.from_pretrained(str(family_dir)).eval()
    tok = EncoderTokenizer.from_dir(family_dir)
    with torch.no_grad():
        for b in _batches(tok):
            assert b.attention_mask.float().mean() < 1.0  # really a padded batch
            o = ours(b.input_ids, b.attention_mask, b.token_type_ids, unpad=unpad)
            r = _hf_forward(hf, b, family)
            real = b.attention_mask.bool()
            err = (o.last_hidden_state - r.last_hidden_state)[real].abs().max().item()
            assert err < 1e-5, err
            if family.pooler:
                assert (o.pooler_output - r.pooler_output).abs().max().item() < 1e-5


@pytest.mark.parametrize("unpad", [False, True])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_gradients_match_transformers(family_dir, impl, unpad):
    """Every parameter's gradient (embeddings, projection, layers, relative positions) within 1e-4
    of transformers'."""
    tok = EncoderTokenizer.from_dir(family_dir)
    a, b_ = zip(*REAL_PAIRS[:4])
    b = tok(list(a), list(b_))
    ours = BertModel.from_pretrained(family_dir).eval()  # eval: no dropout, gradients still flow
    ours.set_attention(impl)
    family = ours.config.family
    hf = transformers.AutoModel.from_pretrained(str(family_dir)).eval()
    m = b.attention_mask.unsqueeze(-1).float()
    (ours(b.input_ids, b.attention_mask, b.token_type_ids, unpad=unpad).last_hidden_state * m).sum().backward()
    (_hf_forward(hf, b, family).last_hidden_state * m).sum().backward()
    assert_grads_match_hf(ours, hf, family)


@pytest.mark.parametrize("max_length", [128, 12])  # 12: truncation of singles and pairs (longest first)
def test_token_ids_equal_autotokenizer(family_dir, max_length):
    ours = EncoderTokenizer.from_dir(family_dir, max_length=max_length)
    hf = transformers.AutoTokenizer.from_pretrained(str(family_dir))
    for texts in ((REAL_SENTENCES,), tuple(map(list, zip(*REAL_PAIRS)))):
        b = ours(*texts)
        r = hf(*texts, padding=True, truncation=True, max_length=ours.max_length, return_tensors="pt")
        assert torch.equal(b.input_ids, r["input_ids"])
        assert torch.equal(b.attention_mask, r["attention_mask"])
        if "token_type_ids" in r:
            assert torch.equal(b.token_type_ids, r["token_type_ids"])
    if max_length == 12:
        assert any(e.truncated for e in ours.encode(REAL_SENTENCES))


def test_tokenizer_round_trips_through_save(family_dir, tmp_path):
    import shutil

    tok = EncoderTokenizer.from_dir(family_dir)
    shutil.copy(family_dir / "config.json", tmp_path / "config.json")
    tok.save(tmp_path)
    again = EncoderTokenizer.from_dir(tmp_path)
    assert again.model_type == tok.model_type and again.vocab == tok.vocab
    a, b = zip(*REAL_PAIRS)
    assert again.encode(list(a), list(b)) == tok.encode(list(a), list(b))
    assert "the movie is good" in again.decode(again.encode(["the movie is good"])[0].ids)


def test_pytorch_model_bin_layout(tmp_path):
    """The older pickled layout loads the same as safetensors (RoBERTa: a family with its own tokenizer)."""
    st = write_tiny_family(tmp_path / "st", "roberta")
    pt = write_tiny_family(tmp_path / "pt", "roberta", weights="bin")
    assert not (pt / "model.safetensors").exists() and (pt / "pytorch_model.bin").is_file()
    a, b = BertModel.from_pretrained(st).state_dict(), BertModel.from_pretrained(pt).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_train_resume_predict_export(family_dir, small_data_dir, tmp_path):
    """The whole tool on the family: train 3 steps, stop at 2 and resume to the same weights,
    predict, and export to HF (transformers' AutoModel gives our encoder's hidden states) and
    to sentence-transformers' layout."""
    from safetensors.torch import load_file

    from bertmtl.runs.checkpoint import load_checkpoint

    common = ["--encoder", family_dir, "--data-dir", small_data_dir, "--max-steps", "3", "--batch-size", "8",
              "--seed", "0", "--device", "cpu", "--precision", "fp32", "--dev-limit", "8"]
    cli("train", *common, "--out", tmp_path / "full")
    cli("train", *common, "--out", tmp_path / "part", "--stop-at-step", "2")
    cli("train", "--resume", tmp_path / "part")
    full, part = (load_file(str(tmp_path / r / "last" / "multitask.safetensors")) for r in ("full", "part"))
    assert full.keys() == part.keys() and all(torch.equal(full[k], part[k]) for k in full)
    ck = load_checkpoint(tmp_path / "full" / "last")
    family = json.loads((family_dir / "config.json").read_text())["model_type"]
    assert ck.model.encoder.config.model_type == family and ck.tokenizer.model_type == family
    r = cli("predict", "the movie is very good", "a film", "--checkpoint", tmp_path / "full" / "last", "--json")
    assert {"sentiment1", "paraphrase_prob", "similarity"} <= set(json.loads(r.stdout.splitlines()[0]))
    cli("export", tmp_path / "full" / "last", "--format", "hf", "--out", tmp_path / "hf")
    hf = transformers.AutoModel.from_pretrained(str(tmp_path / "hf")).eval()
    tok = EncoderTokenizer.from_dir(tmp_path / "hf")
    b = tok(REAL_SENTENCES[:4])
    with torch.no_grad():
        ours = ck.model.encoder.eval()(b.input_ids, b.attention_mask, b.token_type_ids).last_hidden_state
        theirs = _hf_forward(hf, b, ck.model.encoder.config.family).last_hidden_state
    real = b.attention_mask.bool()
    assert (ours - theirs)[real].abs().max() < 1e-5
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert hf_tok(REAL_SENTENCES[:4], padding=True, return_tensors="pt")["input_ids"].tolist() == b.input_ids.tolist()
    cli("export", tmp_path / "full" / "last", "--format", "sentence-transformers", "--out", tmp_path / "st")
    assert (tmp_path / "st" / "modules.json").is_file()


def test_mlm_pretraining_round_trips_through_hf(family_dir, small_data_dir, tmp_path):
    """`bertmtl pretrain` on the family, exported as its HF masked-LM class: transformers' logits
    equal ours, and the exported head loads back."""
    from bertmtl.inference.export import write_hf
    from bertmtl.encoders.weights import load_mlm

    family = BertModel.from_pretrained(family_dir).config.family
    cli("pretrain", "--encoder", family_dir, "--data-dir", small_data_dir, "--out", tmp_path / "mlm", "--steps", "2",
        "--batch-size", "8", "--seed", "0", "--device", "cpu", "--precision", "fp32")
    loaded = load_mlm(tmp_path / "mlm" / "last")
    model = loaded.model.eval()
    tok = EncoderTokenizer.from_dir(tmp_path / "mlm" / "last")
    (tmp_path / "hf").mkdir()
    write_hf(model, tok, tmp_path / "hf")
    hf = getattr(transformers, family.mlm_class).from_pretrained(str(tmp_path / "hf")).eval()
    b = tok(REAL_SENTENCES[:5])
    real = b.attention_mask.bool()
    with torch.no_grad():
        ours = model.masked_logits("mlm", b.input_ids, b.attention_mask, real)
        theirs = _hf_forward(hf, b, family).logits
    assert (ours - theirs[real]).abs().max() < 1e-4
    assert load_mlm(tmp_path / "hf").head_from_checkpoint


def test_pooler_pooling_needs_a_pooler(small_data_dir, tmp_path):
    """--pooling pooler on a family without one (ELECTRA, DistilBERT): a clear error before training."""
    d = write_tiny_family(tmp_path / "distil", "distilbert")
    r = cli("train", "--encoder", d, "--data-dir", small_data_dir, "--out", tmp_path / "run", "--pooling", "pooler",
            "--max-steps", "1", code=2)
    assert "distilbert" in r.output and "has no pooler" in r.output and "--pooling mean" in r.output


def test_every_family_is_tested():
    tested = {"deberta-v2" if f.startswith("deberta") else f for f in FAMILY_NAMES}
    assert set(FAMILIES) == tested  # what only BERT or MPNet has: test_bert.py, test_mpnet.py


def _spm_deberta_dir(directory, **tokenizer_options):
    """DeBERTa-v3's own layout: spm.model (a SentencePiece Unigram model trained here), no tokenizer.json."""
    spm = pytest.importorskip("sentencepiece")
    import io

    from .families import _training_text

    directory.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(_training_text() * 3), model_writer=model, vocab_size=150,
                                   model_type="unigram", pad_id=0, pad_piece="[PAD]", bos_id=1, bos_piece="[CLS]",
                                   eos_id=2, eos_piece="[SEP]", unk_id=3, unk_piece="[UNK]", minloglevel=2)
    (directory / "spm.model").write_bytes(model.getvalue())
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "DebertaV2Tokenizer",
                                                                 **tokenizer_options}))
    transformers.DebertaV2Config(vocab_size=160, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                 intermediate_size=64, relative_attention=True, pos_att_type="p2c|c2p",
                                 position_buckets=8, type_vocab_size=0).save_pretrained(str(directory))
    return directory


@pytest.mark.parametrize("options", [{}, {"do_lower_case": True, "split_by_punct": True}])
def test_deberta_v3_spm_model_gives_autotokenizers_ids(tmp_path, options):
    """From spm.model alone (how microsoft/deberta-v3-base ships its tokenizer): the ids, masks and
    token types of transformers' DebertaV2Tokenizer, singles and pairs, with and without truncation."""
    d = _spm_deberta_dir(tmp_path / "spm", **options)
    hf = transformers.AutoTokenizer.from_pretrained(str(d))
    texts = [*REAL_SENTENCES, "  Spaces   and\ttabs,  PUNCTUATION!!  ", "Ünïcödé café"]
    for max_length in (128, 12):
        ours = EncoderTokenizer.from_dir(d, max_length=max_length)
        for args in ((texts,), tuple(map(list, zip(*REAL_PAIRS)))):
            b = ours(*args)
            r = hf(*args, padding=True, truncation=True, max_length=ours.max_length, return_tensors="pt")
            assert torch.equal(b.input_ids, r["input_ids"]), args
            assert torch.equal(b.attention_mask, r["attention_mask"])
            assert torch.equal(b.token_type_ids, r["token_type_ids"])
    assert ours.mask_id == hf.mask_token_id == 150  # [MASK] comes after the model's pieces, as in DeBERTa-v3


def test_a_damaged_spm_model_is_named(tmp_path):
    from bertmtl.errors import UserError

    d = _spm_deberta_dir(tmp_path / "spm")
    (d / "spm.model").write_bytes((d / "spm.model").read_bytes()[:-7])
    with pytest.raises(UserError, match="spm.model: not a SentencePiece model"):
        EncoderTokenizer.from_dir(d)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["deberta-v3", "roberta", "distilbert"])
def test_onnx_export_answers_what_predict_answers(family, small_data_dir, tmp_path):
    """The ONNX graph of a trained run (dynamic batch and lengths) gives our Predictor's embeddings
    and answers, on a batch and lengths unlike the export's examples."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from bertmtl.inference.predict import Predictor

    d = write_tiny_family(tmp_path / "enc", family)
    cli("train", "--encoder", d, "--data-dir", small_data_dir, "--out", tmp_path / "run", "--max-steps", "1",
        "--batch-size", "8", "--seed", "0", "--device", "cpu", "--precision", "fp32", "--dev-limit", "8")
    cli("export", tmp_path / "run" / "last", "--format", "onnx", "--out", tmp_path / "onnx")
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    predictor = Predictor(tmp_path / "run" / "last", precision="fp32")
    tok = predictor.tokenizer
    pairs = REAL_PAIRS + [("the movie was good", "a film is great and fun to watch")]
    a, b = tok([p[0] for p in pairs]), tok([p[1] for p in pairs])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {
        "input_ids_1": a.input_ids.numpy(), "attention_mask_1": a.attention_mask.numpy(),
        "input_ids_2": b.input_ids.numpy(), "attention_mask_2": b.attention_mask.numpy()})))
    with torch.inference_mode():
        u = predictor._embed([e.ids for e in tok.encode([p[0] for p in pairs])])
    assert (torch.from_numpy(got["embedding1"]) - u).abs().max() < 1e-4
