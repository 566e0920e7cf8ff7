"""Export a trained model for other tools: Hugging Face transformers, sentence-transformers, ONNX.

- `hf`: the encoder as transformers' own BertModel / MPNetModel directory (parameter names mapped
  with model/loading.py's `to_hf_key`), with tokenizer files that give our token ids.
- `sentence-transformers`: the `hf` directory plus the modules that pool as our heads do (mean or
  [CLS]; the tanh pooler is [CLS] followed by a Dense layer with tanh, holding the pooler's
  weights), so `SentenceTransformer(DIR).encode` returns our sentence embeddings.
- `onnx`: encoder and task heads in one graph (`OnnxGraph`): two batches of sentences in, the
  sentence embeddings and every task's post-processed output (what `predict` reports, before
  the argmax / threshold) out.

Each export is written atomically (fsutil.staged_dir) with a README.md model card.
`--push-to-hub` uploads one to the Hugging Face Hub (inference/hub_push.py).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..errors import UserError, extra_hint
from ..fsutil import save_safetensors, staged_dir, write_json
from ..runs.catalog import encoder_of

FORMATS = ("hf", "sentence-transformers", "onnx")
ONNX_FILE = "model.onnx"
ONNX_OPSET = 18


def export(source: str | Path | None, fmt: str, out: str | Path, command: str | None = None,
           overwrite: bool = False, load_name: str = "DIR") -> Path:
    """Export checkpoint (or run directory: its best/) `source` as `fmt` into directory `out`.
    `load_name`: what the model card's example loads (the Hub repository an export is pushed to)."""
    from ..runs.ownership import owned_output
    from ..runs.catalog import resolve_checkpoint

    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "onnx":
        require_onnx()
    path = resolve_checkpoint(source)
    with owned_output(out, overwrite, {"the checkpoint": path}) as out:
        return _export(path, fmt, out, command or command_line(source, fmt, out, overwrite), load_name)


def command_line(source, fmt: str, out: Path | None, overwrite: bool = False, push_to_hub: str | None = None,
                 private: bool = False, revision: str | None = None) -> str:
    """The command line that does this export (for the model card)."""
    return shlex.join(["bertmtl", "export", *([str(source)] if source is not None else []), "--format", fmt,
                       *(["--out", str(out)] if out is not None else []), *(["--overwrite"] if overwrite else []),
                       *(["--push-to-hub", push_to_hub] if push_to_hub else []), *(["--private"] if private else []),
                       *(["--revision", revision] if revision else [])])


def _export(path: Path, fmt: str, out: Path, command: str, load_name: str = "DIR") -> Path:
    from ..runs.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    with staged_dir(out) as d:
        if fmt == "onnx":
            write_onnx(ck, d / ONNX_FILE)
            ck.tokenizer.save_for_hf(d)  # the graph takes token ids: ship what makes them
        else:
            write_hf(ck.model, ck.tokenizer, d)
            if fmt == "sentence-transformers":
                write_sentence_transformers(ck, d)
        (d / "README.md").write_text(model_card(ck, fmt, command, load_name), encoding="utf-8")
    return out


# -- Hugging Face -------------------------------------------------------------------------

def write_hf(model, tokenizer, d: Path) -> None:
    """config.json + model.safetensors of the encoder, and the tokenizer files. A model with a
    masked-LM task (`bertmtl pretrain`) is written as transformers' BertForMaskedLM /
    MPNetForMaskedLM, head included; its encoder part still loads in AutoModel."""
    architecture, state = model.hf_weights()  # an ensemble refuses here: it has no one encoder
    config = model.encoder.config.to_dict()
    config["architectures"] = [architecture]
    if architecture == model.encoder.config.family.mlm_class:
        config["tie_word_embeddings"] = True  # the decoder is the word embeddings, stored once
    write_json(d / "config.json", config)
    save_safetensors(d / "model.safetensors", state)
    tokenizer.save_for_hf(d)


# -- sentence-transformers ----------------------------------------------------------------

# Our pooling -> sentence-transformers' Pooling mode; "pooler" adds a tanh Dense layer after [CLS].
ST_POOLING = {"mean": "mean", "cls": "cls", "pooler": "cls"}


def write_sentence_transformers(ck, d: Path) -> None:
    """modules.json, sentence_bert_config.json, 1_Pooling/ (and 2_Dense/ for the tanh pooler).

    Written in the module layout sentence-transformers has read since version 2, so older
    and newer releases load it alike.
    """
    pooling = ck.model.cfg.pooling
    hidden = ck.model.encoder.config.hidden_size
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    write_json(d / "sentence_bert_config.json", {"max_seq_length": ck.tokenizer.max_length, "do_lower_case": False})
    (d / "1_Pooling").mkdir()
    mode = ST_POOLING[pooling]
    write_json(d / "1_Pooling" / "config.json", {
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": mode == "cls",
        "pooling_mode_mean_tokens": mode == "mean", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False, "include_prompt": True})
    if pooling == "pooler":  # tanh(dense(h_[CLS])): sentence-transformers' Dense with a tanh
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
        (d / "2_Dense").mkdir()
        write_json(d / "2_Dense" / "config.json", {"in_features": hidden, "out_features": hidden, "bias": True,
                                                   "activation_function": "torch.nn.modules.activation.Tanh"})
        dense = ck.model.encoder.pooler.dense
        save_safetensors(d / "2_Dense" / "model.safetensors",
                         {"linear.weight": dense.weight.float(), "linear.bias": dense.bias.float()})
    write_json(d / "modules.json", modules)
    write_json(d / "config_sentence_transformers.json",
               {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"})


# -- ONNX ---------------------------------------------------------------------------------

def require_onnx() -> None:
    """The packages torch.onnx.export needs, or a UserError that says how to install them."""
    missing = []
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(f"ONNX export needs {' and '.join(missing)}: {extra_hint('onnx', 'onnx onnxscript')}")


class OnnxGraph(nn.Module):
    """What `predict` computes for a batch of sentence pairs, as one traceable graph.

    Inputs: input_ids_1, attention_mask_1 and input_ids_2, attention_mask_2 (int64, batch x
    length, right-padded; the two lengths may differ), plus pair_input_ids, pair_attention_mask
    and pair_token_type_ids for a cross-encoder. Outputs (`output_names`): the sentence
    embeddings embedding1 and embedding2, each sentence task's output for sentence 1 and 2
    (e.g. sentiment1: class probabilities), and each pair task's output (paraphrase_prob,
    similarity), all post-processed as `predict` reports them before its argmax or 0.5 threshold.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        answered = [s for s in model.specs.values() if s.output.answers]  # not masked LM
        self.sentence_specs = [s for s in answered if not s.pair]
        self.pair_specs = [s for s in answered if s.pair]
        self.cross = model.cfg.cross

    @property
    def input_names(self) -> list[str]:
        names = ["input_ids_1", "attention_mask_1", "input_ids_2", "attention_mask_2"]
        return names + (["pair_input_ids", "pair_attention_mask", "pair_token_type_ids"] if self.cross else [])

    @property
    def output_names(self) -> list[str]:
        names = ["embedding1", "embedding2"]
        names += [s.json_keys[0] + n for s in self.sentence_specs for n in ("1", "2")]
        return names + [s.json_keys[0] for s in self.pair_specs]

    def _embed(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor | None = None) -> torch.Tensor:
        from ..encoders.tokenizer import Batch

        types = torch.zeros_like(ids) if types is None else types
        return self.model.pooled(Batch(ids, mask, types), unpad=False)

    def forward(self, input_ids_1, attention_mask_1, input_ids_2, attention_mask_2,
                pair_input_ids=None, pair_attention_mask=None, pair_token_type_ids=None) -> tuple:
        m = self.model
        pair = (pair_input_ids, pair_attention_mask, pair_token_type_ids)
        u, v = self._embed(input_ids_1, attention_mask_1), self._embed(input_ids_2, attention_mask_2)
        outs = [u, v]
        for s in self.sentence_specs:
            outs += [m.answer(s.name, x) for x in (u, v)]
        joint = self._embed(*pair) if self.cross else None
        outs += [m.pair_answer(s.name, u, v, joint) for s in self.pair_specs]
        return tuple(outs)


def _position_capacity(config) -> int:
    """The longest input the encoder's position table holds."""
    offset = config.pad_token_id + 1 if config.family.padding_positions else 0
    return config.max_position_embeddings - offset


def write_onnx(ck, path: Path) -> None:
    """Export encoder + heads with dynamic batch and lengths (torch.onnx.export, dynamo exporter)."""
    import contextlib
    import io
    import logging
    import warnings

    model = ck.model.float().eval()
    for encoder in model.encoders:  # an ensemble's members are all in the one graph
        encoder.set_attention("eager")  # plain matmul + softmax: exports everywhere
    graph = OnnxGraph(model)
    tok = ck.tokenizer
    # Example inputs of different lengths with padding, so nothing specialises on them.
    a = tok(["the first example sentence , a little longer than the other", "a short one"])
    b = tok(["another example", "and one more sentence here"])
    args = [a.input_ids, a.attention_mask, b.input_ids, b.attention_mask]
    cap = min(_position_capacity(e.config) for e in model.encoders)
    batch = torch.export.Dim("batch", min=1)
    seq = [torch.export.Dim(f"length_{n}", min=1, max=cap) for n in ("1", "2")]
    shapes = {"input_ids_1": {0: batch, 1: seq[0]}, "attention_mask_1": {0: batch, 1: seq[0]},
              "input_ids_2": {0: batch, 1: seq[1]}, "attention_mask_2": {0: batch, 1: seq[1]}}
    if graph.cross:
        p = tok(["the first example sentence", "a short one"], ["another example", "one more here"])
        args += [p.input_ids, p.attention_mask, p.token_type_ids]
        pseq = torch.export.Dim("length_pair", min=1, max=cap)
        shapes |= {k: {0: batch, 1: pseq} for k in graph.input_names[4:]}
    # The exporter reports its progress with print() and logs about operators of packages we do
    # not use (torchvision); our command's output stays one line.
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    # With gradients on, attention builds its fused QKV weight in the graph instead of caching
    # it by data pointer (which traced tensors do not have).
    with torch.enable_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(graph, tuple(args), dynamo=True, input_names=graph.input_names,
                                        output_names=graph.output_names,
                                        dynamic_shapes=tuple(shapes[n] for n in graph.input_names),
                                        opset_version=ONNX_OPSET, optimize=True, verbose=False)
        finally:
            for encoder in model.encoders:
                encoder.set_attention("auto")
            onnx_log.setLevel(level)
    program.save(str(path), external_data=False)


# -- the model card -----------------------------------------------------------------------

USAGE = {
    "hf": """```python
from transformers import AutoModel, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{out}")
model = AutoModel.from_pretrained("{out}")
hidden = model(**tokenizer(["A gorgeous, witty film."], return_tensors="pt")).last_hidden_state
```
The task heads are not part of this export; {pooling} pooling of `last_hidden_state` gives
the sentence embeddings the heads were trained on.""",
    "sentence-transformers": """```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{out}")
embeddings = model.encode(["A gorgeous, witty film.", "A witty and gorgeous movie."])
```
The embeddings are the ones the task heads were trained on ({pooling} pooling, not normalised);
the heads themselves are not part of this export.""",
    "onnx": """```python
import onnxruntime as ort
from transformers import AutoTokenizer  # or tokenizers.Tokenizer.from_file("{out}/tokenizer.json")

tokenizer = AutoTokenizer.from_pretrained("{out}")
session = ort.InferenceSession("{out}/model.onnx")
a = tokenizer(["How do I learn Python?"], padding=True, truncation=True, return_tensors="np")
b = tokenizer(["What is the best way to learn Python?"], padding=True, truncation=True, return_tensors="np")
outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {{
    "input_ids_1": a["input_ids"], "attention_mask_1": a["attention_mask"],
    "input_ids_2": b["input_ids"], "attention_mask_2": b["attention_mask"]}})))
```
Inputs (int64, batch x length, right-padded; the two lengths may differ):
{inputs}

Outputs (float32; post-processed as `bertmtl predict` reports them, before its argmax or 0.5 threshold):
{outputs}

For a single sentence, pass it as both sentence 1 and sentence 2 and read the sentence-1 outputs.""",
}


def _output_rows(graph: OnnxGraph) -> list[str]:
    """The graph's outputs for people, e.g. "`similarity`: STS, score from 0 to 5 (batch)"."""
    side = ", the members' side by side" if len(graph.model.encoders) > 1 else ""
    rows = [f"- `embedding1`, `embedding2`: the sentence embeddings (batch x {graph.model.embedding_size}{side})"]
    rows += [f"- `{s.json_keys[0]}1`, `{s.json_keys[0]}2`: {s.title}, {s.output.describe(s)}"
             for s in graph.sentence_specs]
    return rows + [f"- `{s.json_keys[0]}`: {s.title}, {s.output.describe(s)}" for s in graph.pair_specs]


def _number(v, spec: str) -> str:
    """A number formatted, anything else (a hand-edited metrics.json) shown as it is."""
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else repr(v)


def _comparison_notes(ck, args: dict) -> list[str]:
    """What to keep in mind when comparing these scores: the CS224N leaderboard's overall score,
    and what of the task data the base encoder had seen (the built-ins were trained on Quora pairs)."""
    from .evaluate import leaderboard_overall
    from ..encoders.weights import BUILTINS

    notes = []
    if (board := leaderboard_overall(ck.metrics)) is not None:
        notes.append(f"The CS224N leaderboard averages STS Pearson r mapped to [0, 1] as (r + 1) / 2: overall "
                     f"{board:.4f} on that scale (the table's overall averages r itself).")
    base = BUILTINS.get(encoder_of(args))
    if base is not None and base.seen_task_data:
        notes.append(base.seen_task_data)
    return ["", "## Comparing these scores", "", *(f"- {n}" for n in notes)] if notes else []


PIPELINE_TAG = {"hf": "feature-extraction", "sentence-transformers": "sentence-similarity",
                "onnx": "text-classification"}
METRIC_TYPE = {"accuracy": "accuracy", "macro_f1": "f1", "f1": "f1", "pearson": "pearsonr", "spearman": "spearmanr"}


# An absolute local path inside text (an option's value, `--task name:kind:/x/train.csv`, `--out=/x`):
# from a slash that starts the text or follows a space, =, :, a quote or a bracket.
_ABS_PATH = re.compile(r"(?<![^\s=:'\"(\[])/(?:[^\s:'\",=\])/]+/)*([^\s:'\",=\])/]+)")


def _public(value):
    """A value for a model card, which leaves this machine: a local absolute path becomes `.../NAME`."""
    if isinstance(value, str):
        return _ABS_PATH.sub(lambda m: f".../{m.group(1)}", value)
    if isinstance(value, list):
        return [_public(v) for v in value]
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items()}
    return value


def card_metadata(ck, fmt: str) -> dict:
    """The model card's YAML metadata (huggingface_hub's ModelCardData): base model and its
    revision, license of the base model where known, datasets, pipeline tag, the dev metrics."""
    from huggingface_hub import EvalResult, ModelCardData

    from ..encoders.hub import hub_name
    from ..runs.checkpoint import checkpoint_name
    from ..tasks.builtin import HUB_DATASETS
    from ..encoders.weights import BUILTINS

    args = ck.train_args
    encoder = encoder_of(args)
    builtin = BUILTINS.get(encoder)
    base = builtin.hub_id if builtin else (hub_name(encoder) or (None,))[0] if isinstance(encoder, str) else None
    name = checkpoint_name(ck.path)
    results = []
    for task in ck.tasks:
        spec = ck.model.specs.get(task)
        if spec is None or task not in HUB_DATASETS:
            continue
        dataset, task_type = HUB_DATASETS[task]
        for m in spec.metrics:
            v = ck.metrics.get(spec.metric_key(m))
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                results.append(EvalResult(task_type=task_type, dataset_type=dataset, dataset_name=f"{spec.title} (CS224N dev)",
                                          dataset_split="dev", metric_type=METRIC_TYPE.get(m, m),
                                          metric_value=round(float(v), 4)))  # not float32's 0.38999998569...
    extra = {"base_model_revision": args.get("encoder_revision")} if args.get("encoder_revision") else {}
    data = ModelCardData(
        library_name="transformers" if fmt == "hf" else ("sentence-transformers" if fmt != "onnx" else "onnx"),
        base_model=base, license=builtin.license if builtin and builtin.license else None,
        datasets=sorted({HUB_DATASETS[t][0] for t in ck.tasks if t in HUB_DATASETS}) or None,
        pipeline_tag=PIPELINE_TAG[fmt], tags=["bertmtl", "multi-task"], model_name=name if results else None,
        eval_results=results or None, **extra)
    return data


def model_card(ck, fmt: str, command: str, load_name: str = "DIR") -> str:
    """README.md of an export: YAML metadata (card_metadata), then what it is, how to load it,
    base encoder, data, options, dev metrics, command; written through huggingface_hub's ModelCard."""
    from huggingface_hub import ModelCard

    return str(ModelCard(f"---\n{card_metadata(ck, fmt).to_yaml()}\n---\n\n{card_text(ck, fmt, command, load_name)}"))


def _short(path: str | Path) -> str:
    """A checkpoint's path for a card, which leaves this machine: its run's name and its own (`RUN/best`)."""
    return f"{Path(path).parent.name}/{Path(path).name}"


def _soup_of(path) -> list[str] | None:
    """The checkpoints a soup averages (its soup.json), or None for a model that is not a soup."""
    from ..runs.rundir import SOUP, read_json

    if not (Path(path) / SOUP).is_file():
        return None
    members = read_json(Path(path) / SOUP).get("members")
    return [str(m) for m in members] if isinstance(members, list) else None


def card_text(ck, fmt: str, command: str, load_name: str = "DIR") -> str:
    """The card's text below its metadata; its example loads `load_name` (the ONNX one reads files, DIR)."""
    from ..tasks import metric_rows

    args, info, cfg = _public(ck.train_args), ck.info, ck.model.encoders[0].config
    where = Path(ck.path).resolve()
    title = {"hf": "Hugging Face transformers encoder", "sentence-transformers": "sentence-transformers model",
             "onnx": "ONNX graph (encoder and task heads)"}[fmt]
    if ck.members:
        title = f"ONNX graph (an ensemble of {len(ck.members)} encoders with their task heads)"
        made = (f"an ensemble of {len(ck.members)} models, each answer the mean of theirs; its members: "
                + "; ".join(f"`{_short(s)}` ({m.summary()})" for s, m in zip(ck.member_sources(), ck.members)))
    else:
        made = f"step {info.get('step', '?')}, epoch {_number(info.get('epoch', 0), '.2f')}"
        if (soup := _soup_of(ck.path)) is not None:
            made += f"; a model soup: the mean of the weights of {', '.join(f'`{_short(m)}`' for m in soup)}"
    lines = [f"# {ck.name}: {title}", "",
             f"Exported by bertmtl {__version__} from `{_short(where)}` ({made}).", "", "## Use", ""]
    graph = OnnxGraph(ck.model)
    lines.append(USAGE[fmt].format(out="DIR" if fmt == "onnx" else load_name, pooling=ck.model.cfg.pooling,
                                   inputs="\n".join(f"- `{n}`" for n in graph.input_names),
                                   outputs="\n".join(_output_rows(graph))))
    lines += ["", "## Base encoder", "",
              f"`{encoder_of(args)}`: {cfg.family.architecture}, "
              f"{cfg.num_hidden_layers} layers, hidden size {cfg.hidden_size}, vocabulary {cfg.vocab_size}; "
              f"pooling `{ck.model.cfg.pooling}`, pairs `{ck.model.cfg.pair_mode}`.", "",
              "## Data", "",
              f"Trained on {', '.join(ck.model.specs[t].title for t in ck.tasks if t in ck.model.specs)} from "
              f"`{args.get('data_dir', '?')}`" + (f", with augmented copies from `{args['augment']}`"
                                                  if args.get("augment") else "") + ".", "",
              "## Dev metrics", ""]
    undefined = ck.metrics.get("undefined")
    undefined = undefined if isinstance(undefined, dict) else {}
    # an undefined metric (None) says why instead of showing a number
    shown = lambda key, v: _number(v, ".4f") if v is not None else \
        f"undefined ({(undefined.get(key) or {}).get('reason')})"  # noqa: E731
    rows = [(title, shown(key, ck.metrics[key]), ck.metrics.get(count))
            for key, title, count in metric_rows(ck.model.specs.values()) if key in ck.metrics]
    if rows:
        lines += ["| metric | value | examples |", "|---|---|---|"]
        lines += [f"| {t} | {v} | {n if n is not None else ''} |" for t, v, n in rows]
        if ck.metrics.get("overall") is not None:
            lines.append(f"| overall | {_number(ck.metrics['overall'], '.4f')} | |")
    else:
        lines.append("None recorded (no dev evaluation before this checkpoint).")
    lines += _comparison_notes(ck, args)
    lines += ["", "## Training options (train_args.json, local paths shortened)", "", "```json", json.dumps(args, indent=2, sort_keys=True),
              "```", "", "## Made with", "", "```", _public(command), "```", ""]
    return "\n".join(lines)
