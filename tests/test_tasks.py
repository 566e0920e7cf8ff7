"""Tasks as data: the built-in specs, and any list of specs through heads, losses, SMART,
evaluation and prediction."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from bertmtl.tasks.files import Example
from bertmtl.data.batching import RoundRobin, TaskDataset
from bertmtl.inference.evaluate import decisions, evaluate, overall, task_metrics, write_predictions
from bertmtl.model import BertModel
from bertmtl.model.heads import HeadConfig, MultitaskBert
from bertmtl.mtl.smart import SmartConfig, divergence, smart_loss
from bertmtl.inference.predict import Predictor
from bertmtl.inference.protocol import to_tsv, tsv_columns
from bertmtl.data.mlm_text import BUILTIN_SOURCES, SOURCE_ALIASES
from bertmtl.tasks import BUILTIN, REGRESSION, SIGMOID, SOFTMAX, TASK_ALIASES, TASKS, TaskSpec, metric_rows
from bertmtl.encoders.tokenizer import EncoderTokenizer
from bertmtl.runs.state import RunState

from .conftest import tiny_config, tiny_vocab

# Tasks nobody tuned for: one of each kind, and a three-way pair classification.
INTENT = TaskSpec.define("intent", "Intent", "intents", ("text",), "label", kind="classification",
                         labels=("greet", "bye", "ask"))
DUPE = TaskSpec.define("dupe", "Dupes", "dupes", ("q1", "q2"), "dup", kind="pair-classification", labels=("no", "yes"))
SCORE = TaskSpec.define("score", "Score", "scores", ("a", "b"), "score", kind="pair-regression",
                        value_range=(1.0, 10.0))
NLI = TaskSpec.define("nli", "NLI", "nli", ("premise", "hypothesis"), "label", kind="pair-classification",
                      labels=("entail", "neutral", "contradict"))
RATING = TaskSpec.define("rating", "Rating", "ratings", ("review",), "stars", kind="regression",
                         value_range=(0.0, 1.0))
USER = (INTENT, DUPE, SCORE, NLI, RATING)


def test_tasks_module_imports_no_torch():
    code = "import sys, bertmtl.tasks; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_builtin_specs_hold_data_and_their_output_kind():
    sst, para, sts = BUILTIN
    assert list(TASKS) == ["sst", "para", "sts"]
    assert (sst.kind, sst.output, sst.metrics, sst.width, sst.output.label_dtype) == \
        ("classification", SOFTMAX, ("accuracy", "macro_f1"), 5, "int")
    assert (para.kind, para.output, para.metrics, para.width, para.output.label_dtype) == \
        ("pair-classification", SIGMOID, ("accuracy", "f1"), 1, "float")
    assert (sts.kind, sts.output, sts.metrics, sts.value_range) == \
        ("pair-regression", REGRESSION, ("pearson", "spearman"), (0.0, 5.0))
    assert [k for s in BUILTIN for k in s.metric_keys] == ["sst_acc", "sst_f1", "para_acc", "para_f1", "sts_corr",
                                                           "sts_spearman"]
    assert [s.prediction_header for s in BUILTIN] == ["Predicted_Sentiment", "Predicted_Is_Paraphrase",
                                                       "Predicted_Similarity"]
    assert {s.name: s.smart_weight for s in BUILTIN} == {"sst": 0.5, "para": 0.0, "sts": 0.5}
    assert [s.filename("test") for s in BUILTIN] == ["ids-sst-test-student.csv", "quora-test-student.csv",
                                                      "sts-test-student.csv"]
    assert TASK_ALIASES == {"sentiment": "sst", "paraphrase": "para", "quora": "para", "similarity": "sts"}
    assert metric_rows(BUILTIN)[1] == ("sst_f1", "SST macro-F1", "sst_n")
    assert list(BUILTIN_SOURCES) == ["sst", "quora", "sts", "imdb"] and SOURCE_ALIASES["para"] == "quora"
    assert tsv_columns() == ("line", "id", "sentiment1", "sentiment2", "paraphrase_prob", "is_paraphrase",
                             "similarity", "error")


def test_user_spec_defaults_follow_the_kind():
    assert (INTENT.output, INTENT.metrics, INTENT.json_keys) == (SOFTMAX, ("accuracy", "macro_f1"), ("intent",))
    assert (DUPE.output, DUPE.metrics, DUPE.json_keys) == (SIGMOID, ("accuracy",), ("dupe_prob", "is_dupe"))
    assert (SCORE.output, SCORE.metric_keys, SCORE.metric_columns) == (REGRESSION, ("score_corr",), ("Score r",))
    # What tasks.json holds, and what an older checkpoint's tasks.json (its activation) reads as.
    assert TaskSpec.from_dict(SCORE.to_dict()) == SCORE and SCORE.to_dict()["output"] == "regression"
    old = {k: v for k, v in DUPE.to_dict().items() if k != "output"} | {"loss": "bce", "activation": "sigmoid"}
    assert TaskSpec.from_dict(old) == DUPE
    assert SCORE.parse_label("10") == 10.0 and INTENT.parse_label("2") == 2
    with pytest.raises(ValueError, match="outside 1-10"):
        SCORE.parse_label("11")
    with pytest.raises(ValueError, match="not one of 0, 1, 2"):
        INTENT.parse_label("3")


@pytest.mark.parametrize("kw, message", [
    (dict(name="Bad-Name"), "lower-case"),
    (dict(kind="ranking"), "kind must be one of"),
    (dict(kind="pair-regression"), "reads 2 text column"),
    (dict(labels=("only",)), "at least two label names"),
    (dict(kind="regression", labels=()), "needs a value_range"),
    (dict(metrics=("bleu",)), "unknown metric"),
    (dict(output=REGRESSION), "cannot have a regression output"),
    (dict(output=SIGMOID), "exactly two labels"),
])
def test_bad_specs_are_refused(kw, message):
    args = dict(name="t", title="T", prefix="t", text_columns=("text",), label_column="y", labels=("a", "b", "c"))
    with pytest.raises(ValueError, match=message):
        TaskSpec.define(**{**args, **kw})
    with pytest.raises(TypeError):  # TaskSpec itself takes a complete spec: only define() derives
        TaskSpec(**args)


def _model(specs, cfg: HeadConfig | None = None) -> MultitaskBert:
    torch.manual_seed(0)
    return MultitaskBert(BertModel(tiny_config(len(tiny_vocab()))), cfg or HeadConfig(mlp_hidden=8), specs)


def test_builtin_heads_keep_their_parameter_names():
    names = [n for n, _ in _model(None).named_parameters() if not n.startswith("encoder.")]
    # Checkpoints and optimizer state are keyed by these names, in this order.
    assert names == ["sts_calibration", "sst.weight", "sst.bias",
                     *(f"{t}.{p}" for t in ("para", "sts") for p in ("scale", "bias", "mlp.0.weight", "mlp.0.bias",
                                                                       "mlp.3.weight", "mlp.3.bias"))]


def test_spec_driven_heads_have_one_output_per_class():
    model = _model(USER).eval()
    u, v = torch.randn(2, 32), torch.randn(2, 32)
    assert model.head_output("intent", u).shape == (2, 3)
    assert model.head_output("dupe", u, v).shape == (2,)
    assert model.head_output("score", u, v).shape == (2,)
    assert model.head_output("nli", u, v).shape == (2, 3)
    assert model.head_output("rating", u).shape == (2,)
    with pytest.raises(ValueError, match="is taken"):
        _model((INTENT, INTENT))
    with pytest.raises(ValueError, match="is taken"):
        _model((TaskSpec.define("encoder", "E", "e", ("t",), "y", labels=("a", "b")),))


def test_spec_driven_losses_exact():
    model = _model(USER)
    assert model.loss("intent", torch.zeros(1, 3), torch.tensor([0])).item() == pytest.approx(math.log(3))
    assert model.loss("dupe", torch.zeros(2), torch.tensor([1.0, 0.0])).item() == pytest.approx(math.log(2))
    # Perfect correlation: 1 - Pearson is 0, leaving the calibration term mean((out - label)^2) = 14/3.
    out, gold = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 6.0])
    assert model.loss("score", out, gold).item() == pytest.approx(14 / 3)
    mse = _model(USER, HeadConfig(mlp_hidden=8, sts_loss="mse"))
    assert mse.loss("rating", out, gold).item() == pytest.approx(14 / 3)


def test_spec_driven_postprocessing_and_decisions_exact():
    model = _model(USER)
    probs = model.postprocess("intent", torch.tensor([[0.0, math.log(3.0), 0.0]]))
    assert probs[0].tolist() == pytest.approx([0.2, 0.6, 0.2])
    assert decisions(INTENT, probs).tolist() == [1]
    p = model.postprocess("dupe", torch.tensor([0.0, 2.0]))
    assert p.tolist() == pytest.approx([0.5, 1 / (1 + math.exp(-2))])
    assert decisions(DUPE, p).tolist() == [0.0, 1.0]
    # The calibration starts at (1, 0): the score is clamped into the task's range.
    assert model.postprocess("score", torch.tensor([-3.0, 4.0, 20.0])).tolist() == [1.0, 4.0, 10.0]


def test_spec_driven_metrics_exact():
    probs = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 2]), 3).float()
    m = task_metrics(INTENT, probs, torch.tensor([0, 1, 1, 2]))
    # Per-class F1: 1, 2/3, 2/3.
    assert m == {"intent_acc": 0.75, "intent_f1": pytest.approx(7 / 9), "intent_n": 4}
    m = task_metrics(DUPE, torch.tensor([0.2, 0.7, 0.9]), torch.tensor([0.0, 1.0, 0.0]))
    assert m == {"dupe_acc": pytest.approx(2 / 3), "dupe_n": 3}
    m = task_metrics(SCORE, torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 2.0, 1.0]))
    assert m == {"score_corr": pytest.approx(-1.0), "score_n": 3}
    # overall averages the first metric of each task, in spec order.
    assert overall({"intent_acc": 0.75, "intent_f1": 0.1, "dupe_acc": 0.25}, USER) == 0.5


def test_smart_divergence_follows_the_activation():
    a, b = torch.tensor([1.0, -1.0]), torch.tensor([0.0, 0.5])
    # A sigmoid logit z is the categorical [0, z]; NLI's softmax sees those logits as given.
    as_pairs = divergence(NLI, torch.stack([torch.zeros(2), a], -1), torch.stack([torch.zeros(2), b], -1), True)
    assert divergence(DUPE, a, b, True).item() == pytest.approx(as_pairs.item())
    assert divergence(RATING, a, b, False).item() == pytest.approx(((1 - 0) ** 2 + (-1 - 0.5) ** 2) / 2)


def _datasets(tok, specs, n=6):
    out = {}
    words = ["good movie", "bad film", "the dog runs", "a cat eats food", "learn python code", "play guitar"]
    for spec in specs:
        examples = []
        for i in range(n):
            if spec.value_range is not None:
                low, high = spec.value_range
                label = low + (high - low) * i / (n - 1)
            else:
                label = i % len(spec.labels)
            examples.append(Example(f"{spec.name}{i}", words[i], words[(i + 1) % n] if spec.pair else None, label, i + 2))
        out[spec.name] = TaskDataset(spec, examples, tok)
    return out


@pytest.mark.parametrize("specs", [USER[:1], USER[1:3], USER[:4], USER])
def test_any_spec_list_trains_evaluates_and_predicts(tiny_bert_dir, tmp_path, specs):
    tok = EncoderTokenizer.from_dir(tiny_bert_dir)
    model = _model(specs)
    datasets = _datasets(tok, specs)
    batches = RoundRobin(datasets, batch_size=4, seed=1).next()
    assert list(batches) == [s.name for s in specs]
    for name, batch in batches.items():
        assert batch.labels.dtype == (torch.long if model.specs[name].output.label_dtype == "int" else torch.float32)
        embeds = model.embed(batch)
        out = model.head(batch, embeds)
        loss = model.loss(name, out, batch.labels) + smart_loss(model, batch, embeds, out, SmartConfig(), key=3)
        loss.backward()
        assert torch.isfinite(loss)
    metrics = evaluate(model, datasets, batch_size=4)
    assert set(metrics) - {"undefined"} == {*(k for s in specs for k in (*s.metric_keys, s.count_key)), "overall"}
    # A fresh regression head whose scores all clamp to one end of the range predicts one value:
    # its correlation is undefined because of the model, and the evaluation has no overall.
    constant = {k for s in specs if s.output is REGRESSION and evaluate_outputs(model, datasets[s.name]).unique().numel() == 1
                for k in s.metric_keys}
    assert set(metrics.get("undefined", {})) == constant
    if constant:
        assert metrics["overall"] is None and all(metrics[k] is None for k in constant)
    else:
        assert metrics["overall"] == pytest.approx(sum(metrics[s.primary_metric] for s in specs) / len(specs))
    written = write_predictions(model, datasets, tmp_path, "dev", batch_size=4)
    assert [p.read_text().splitlines()[0] for p in written] == [f"id,{s.prediction_header}" for s in specs]

    predictor = Predictor.__new__(Predictor)  # the model above, without a checkpoint on disk
    predictor.model, predictor.tokenizer, predictor.cross, predictor.batch_size = model.eval(), tok, False, 4
    predictor.device, predictor.autocast_dtype = torch.device("cpu"), None
    pair = predictor.pair("good movie", "bad film")
    expected = [k + n for s in specs if not s.pair for k in s.json_keys for n in ("1", "2")]
    expected += [k for s in specs if s.pair for k in s.json_keys]
    assert list(pair) == expected
    # The Predictor answers what evaluation computes for the same text.
    single = predictor.sentence("good movie")
    for s in specs:
        if not s.pair and s.output is SOFTMAX:
            probs = evaluate_outputs(model, datasets[s.name])[0]
            assert single[s.json_keys[0]]["probabilities"] == pytest.approx(probs.tolist(), abs=1e-6)
    assert len(to_tsv(pair, 1, specs).split("\t")) == len(tsv_columns(specs))


def evaluate_outputs(model, dataset):
    from bertmtl.inference.evaluate import outputs_of

    return outputs_of(model, dataset, batch_size=4)


def test_run_state_keeps_the_metrics_of_its_tasks():
    state = RunState(USER[:2])
    state.apply([{"type": "eval", "step": 5, "intent_acc": 0.5, "intent_f1": 0.4, "dupe_acc": 0.9, "overall": 0.7}])
    assert state.evals[0] == {"step": 5, "epoch": None, "intent_acc": 0.5, "intent_f1": 0.4, "dupe_acc": 0.9,
                              "overall": 0.7, "best": False}
