"""Further masked-LM pretraining on the task text (`bertmtl pretrain`).

Text: the train files' sentences (SST, both sides of Quora and STS pairs, IMDB reviews when
ids-cfimdb-train.csv is there), plus augmented copies on request. A held-out slice of each
dataset measures MLM loss and perplexity before and after, with the same masks both times.
Masking follows BERT: 15% of the non-special tokens are chosen; 80% of those become [MASK],
10% a random token, 10% stay as they are. The output is an HF-format directory.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import Task, read_task_file, stable_seed, task_files
from .errors import UserError
from .optim import scheduled_lr
from .progress import ThroughputWindow, progress_bar
from .tasks import pretrain_sources
from .tokenizer import DEFAULT_MAX_LENGTH, WordPieceTokenizer

# Text sources, by the names the options use. IMDB reviews are extra movie-domain text only.
SOURCES, SOURCE_ALIASES = pretrain_sources()  # {name: TaskSpec}, {alias: name}


# -- options -------------------------------------------------------------------------------

def parse_sources(spec: str) -> list[str]:
    """'sst,quora' -> ['sst', 'quora'] (also para/paraphrase, similarity, cfimdb)."""
    names = [SOURCE_ALIASES.get(s.strip().lower(), s.strip().lower()) for s in spec.replace(" ", ",").split(",") if s.strip()]
    bad = [n for n in names if n not in SOURCES]
    if bad or not names:
        raise ValueError(f"unknown dataset(s) {', '.join(bad) or repr(spec)}; choose from {', '.join(SOURCES)}")
    return [s for s in SOURCES if s in names]


def parse_amounts(spec: str | list[str] | tuple, what: str, integer: bool) -> dict[str, float]:
    """'quora=5000,sts=2' (or several such strings) -> {'quora': 5000, 'sts': 2}."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    out: dict[str, float] = {}
    for part in (p for s in parts for p in s.split(",") if p.strip()):
        try:
            k, v = part.split("=")
            value = int(v) if integer else float(v)
        except ValueError:
            raise ValueError(f"{what}: expected DATASET={'N' if integer else 'FACTOR'} pairs like "
                             f"quora={'5000' if integer else '2'}, got {part!r}") from None
        name = SOURCE_ALIASES.get(k.strip().lower(), k.strip().lower())
        if name not in SOURCES:
            raise ValueError(f"{what}: unknown dataset {k.strip()!r}; choose from {', '.join(SOURCES)}")
        if value < (0 if integer else 1) or not math.isfinite(value):
            raise ValueError(f"{what}: {part!r} must be {'>= 0' if integer else 'a factor >= 1'}")
        out[name] = value
    return out


@dataclass
class PretrainConfig:
    """Every option of a further-pretraining run (saved in pretrain.json)."""

    data_dir: str = "data"
    out: str = "pretrained-mlm"
    encoder: str = "minilm"  # a built-in name (minilm, mpnet) or an HF BERT / MPNet directory
    datasets: list = field(default_factory=lambda: list(SOURCES))
    augmented: str | None = None  # a `bertmtl augment` output directory
    caps: dict = field(default_factory=dict)  # dataset -> at most N training texts
    upsample: dict = field(default_factory=dict)  # dataset -> repeat factor
    epochs: float = 1.0
    steps: int | None = None  # overrides epochs
    head_steps: int | None = None  # head-only steps before "before"; None = auto
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 5e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.06
    clip: float = 1.0
    mask_prob: float = 0.15
    max_length: int = DEFAULT_MAX_LENGTH
    heldout: float = 0.05
    heldout_max: int = 500  # per dataset
    seed: int = 42
    device: str = "auto"
    overwrite: bool = False
    log_every: int = 10

    def validate(self) -> None:
        """Every number finite and in range (the rule of train_config.number_problem), for Python
        callers as for the command line."""
        from .train_config import SEED_MAX, check_numbers

        above0, at_least1 = {"min": 0, "min_open": True}, {"min": 1}
        fraction = {"min": 0, "max": 1, "min_open": True, "max_open": True}
        check_numbers([
            ("batch_size", self.batch_size, at_least1), ("eval_batch_size", self.eval_batch_size, at_least1),
            ("epochs", self.epochs, above0), ("steps", self.steps, at_least1), ("head_steps", self.head_steps, {"min": 0}),
            ("lr", self.lr, above0), ("head_lr", self.head_lr, above0), ("weight_decay", self.weight_decay, {"min": 0}),
            ("warmup", self.warmup, {"min": 0, "max": 1, "max_open": True}), ("clip", self.clip, {"min": 0}),
            ("mask_prob", self.mask_prob, fraction), ("heldout", self.heldout, fraction),
            ("heldout_max", self.heldout_max, at_least1), ("max_length", self.max_length, {"min": 8}),
            ("seed", self.seed, {"min": 0, "max": SEED_MAX}), ("log_every", self.log_every, at_least1),
        ])


# -- text ----------------------------------------------------------------------------------

def base_id(example_id: str) -> str:
    """'abc-aug2' -> 'abc': an augmented copy belongs with its original."""
    head, sep, tail = example_id.rpartition("-aug")
    return head if sep and tail.isdigit() else example_id


def _texts_of(path: Path, task: Task, labelled: bool, warn) -> list[tuple[str, str]]:
    f = read_task_file(path, task, labelled=labelled, warn=warn)
    out = []
    for e in f.examples:
        out.append((e.id, e.text_a))
        if e.text_b is not None:
            out.append((e.id, e.text_b))
    return out


def collect_texts(data_dir: str | Path, datasets: list[str], augmented: str | Path | None = None,
                  warn=None) -> tuple[dict[str, list[tuple[str, str]]], dict[str, list[tuple[str, str]]]]:
    """(original, augmented) texts per dataset, as (id, text), exact duplicates removed.

    Rows the readers skip are reported through `warn` (as in training). IMDB is optional:
    absent from DATA_DIR, it is left out with a note.
    """
    data_dir = Path(data_dir)
    original, extra = {}, {}
    for name in datasets:
        task = SOURCES[name]
        path = data_dir / task.filename("train")
        if name == "imdb" and not path.is_file():
            if warn:
                warn(f"note: {path} not found; pretraining without IMDB text")
            continue
        # The labels play no part here, but reading labelled keeps the same rows as training.
        original[name] = _dedupe(_texts_of(path, task, labelled=name != "imdb", warn=warn))
    if augmented is not None:
        adir = Path(augmented)
        if not adir.is_dir():
            raise UserError(f"--augmented {adir}: no such directory (make one with `bertmtl augment`)")
        for name in original:
            task = SOURCES[name]
            p = adir / task.filename("train")
            if p.is_file():
                extra[name] = _dedupe(_texts_of(p, task, labelled=name != "imdb", warn=warn))
        if not extra:
            names = ", ".join(SOURCES[n].filename("train") for n in original)
            raise UserError(f"--augmented {adir}: none of {names} there; is it a `bertmtl augment` output?")
    if not original:
        raise UserError(f"{data_dir}: no task text found for {', '.join(datasets)}")
    return original, extra


def _dedupe(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen, out = set(), []
    for i, t in items:
        if t not in seen:
            seen.add(t)
            out.append((i, t))
    return out


def split_heldout(original: dict, extra: dict, fraction: float, max_per: int, seed: int) -> tuple[dict, dict]:
    """(train, heldout) texts per dataset.

    Held out by original id, and augmented copies of held-out examples are dropped, so the
    held-out text is never seen in training, not even reworded.
    """
    train, heldout = {}, {}
    for name, items in original.items():
        ids = sorted({base_id(i) for i, _ in items})
        random.Random(stable_seed(seed, "heldout", name)).shuffle(ids)
        k = min(max_per, max(1, round(fraction * len(ids)))) if len(ids) >= 2 else 0
        held = set(ids[:k])
        heldout[name] = [t for i, t in items if i in held]
        train[name] = [t for i, t in items if i not in held]
        train[name] += [t for i, t in extra.get(name, []) if base_id(i) not in held]
    return train, heldout


def balance(train: dict[str, list[str]], caps: dict, upsample: dict, seed: int) -> dict[str, list[str]]:
    """Cap datasets at N texts (a seeded random subset) and repeat small ones by a factor."""
    out = {}
    for name, texts in train.items():
        texts = list(texts)
        rng = random.Random(stable_seed(seed, "balance", name))
        if name in caps and len(texts) > caps[name]:
            texts = rng.sample(texts, int(caps[name]))
        if name in upsample:
            factor = upsample[name]
            whole, frac = int(factor), factor - int(factor)
            texts = texts * whole + rng.sample(texts, round(frac * len(texts)))
        out[name] = texts
    return out


# -- masking -------------------------------------------------------------------------------

class MlmTexts:
    """Texts tokenised once, with the dataset each came from; batches are padded on demand."""

    def __init__(self, texts: dict[str, list[str]], tokenizer: WordPieceTokenizer):
        self.tokenizer = tokenizer
        self.names = list(texts)
        self.source: list[int] = []
        self.encoded = []
        for k, name in enumerate(self.names):
            if texts[name]:
                self.encoded += tokenizer.encode(texts[name])
                self.source += [k] * len(texts[name])
        self.lengths = [len(e.ids) for e in self.encoded]

    def __len__(self) -> int:
        return len(self.encoded)

    def batch(self, index: list[int]):
        return self.tokenizer.pad([self.encoded[i] for i in index])


def special_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, tokenizer: WordPieceTokenizer) -> torch.Tensor:
    """True where a token must never be masked: [CLS], [SEP], padding."""
    return (attention_mask == 0) | (input_ids == tokenizer.cls_id) | (input_ids == tokenizer.sep_id) | (input_ids == tokenizer.pad_id)


def replacement_ids(tokenizer: WordPieceTokenizer) -> torch.Tensor:
    """Token ids a masked position may be replaced by at random: every non-special token."""
    # [CLS]-style (BERT) and <s>-style (MPNet) specials.
    special = {i for t, i in tokenizer.vocab.items()
               if (t.startswith("[") and t.endswith("]")) or (t.startswith("<") and t.endswith(">"))}
    return torch.tensor(sorted(set(range(tokenizer.vocab_size)) - special), dtype=torch.long)


def mask_tokens(input_ids: torch.Tensor, special: torch.Tensor, mask_id: int, random_ids: torch.Tensor,
                generator: torch.Generator, prob: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: (inputs, labels); labels are -100 where nothing is to be predicted.

    Each non-special token is chosen with probability `prob`; a chosen token becomes [MASK]
    80% of the time, a random token 10%, and stays 10%. At least one token of the batch is
    chosen, so the loss is always defined.
    """
    chosen = (torch.rand(input_ids.shape, generator=generator) < prob) & ~special
    if not chosen.any():
        candidates = (~special).nonzero()
        if len(candidates):
            r, c = candidates[torch.randint(len(candidates), (1,), generator=generator)][0]
            chosen[r, c] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    u = torch.rand(input_ids.shape, generator=generator)
    rand_tokens = random_ids[torch.randint(len(random_ids), input_ids.shape, generator=generator)]
    inputs = torch.where(chosen & (u < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    inputs = torch.where(chosen & (u >= 0.8) & (u < 0.9), rand_tokens, inputs)
    return inputs, labels


# -- evaluation ----------------------------------------------------------------------------

@torch.inference_mode()
def evaluate_mlm(model, data: MlmTexts, batch_size: int, device: torch.device, seed: int,
                 mask_prob: float = 0.15, quiet: bool = False, label: str = "held-out MLM") -> dict:
    """Mean masked-token cross-entropy and perplexity, overall and per dataset.

    The masks come from a generator seeded by `seed` and the batches are in a fixed order,
    so calls with the same seed score the same masked tokens (before vs after is fair).
    """
    from .data import bucketed_batches

    was_training = model.training
    model.eval()
    tok = data.tokenizer
    gen = torch.Generator().manual_seed(seed)
    random_ids = replacement_ids(tok)
    n = len(data.names)
    loss_sum, count = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.long)
    batches = bucketed_batches(data.lengths, batch_size, generator=None, bucket=True)
    with progress_bar(label, len(batches), quiet) as advance:
        for idx in batches:
            b = data.batch(idx)
            inputs, labels = mask_tokens(b.input_ids, special_mask(b.input_ids, b.attention_mask, tok), tok.mask_id,
                                         random_ids, gen, mask_prob)
            pos = labels != -100
            logits = model.masked_logits(inputs.to(device), b.attention_mask.to(device), pos.to(device))
            losses = F.cross_entropy(logits.float(), labels[pos].to(device), reduction="none").double().cpu()
            src = torch.tensor([data.source[i] for i in idx])[:, None].expand_as(pos)[pos]
            loss_sum.index_add_(0, src, losses)
            count.index_add_(0, src, torch.ones_like(src))
            advance()
    model.train(was_training)

    def entry(s: float, c: int) -> dict:
        loss = s / c if c else float("nan")
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)) if c else float("nan"), "tokens": int(c)}

    out = entry(loss_sum.sum().item(), int(count.sum()))
    out["datasets"] = {name: entry(loss_sum[k].item(), int(count[k])) for k, name in enumerate(data.names) if count[k]}
    return out


# -- the run -------------------------------------------------------------------------------

def output_inputs(cfg: PretrainConfig) -> dict[str, str | Path | None]:
    """What pretraining reads, which --out must not overlap (outputs.check_output)."""
    files = task_files(cfg.data_dir, {n: SOURCES[n] for n in cfg.datasets}, ("train",))
    return {**files, "--augmented": cfg.augmented, "--encoder": cfg.encoder}


def pretrain(cfg: PretrainConfig, reporter=None) -> dict:
    """Run further MLM pretraining; writes cfg.out (HF format + pretrain.json) and returns the report."""
    from .outputs import owned_output
    from .progress import default_reporter

    t_start = time.perf_counter()
    cfg.validate()
    with owned_output(cfg.out, cfg.overwrite, output_inputs(cfg)) as out:  # checked, and ours, before any work
        return _pretrain(cfg, out, reporter or default_reporter(), t_start)


def _pretrain(cfg: PretrainConfig, out: Path, reporter, t_start: float) -> dict:
    from .data import bucketed_batches
    from .device import pick_device
    from .fsutil import check_writable, staged_dir, write_json
    from .model.mlm import load_mlm, save_mlm
    from .optim import AdamW, parameter_groups

    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)

    loaded = load_mlm(cfg.encoder)
    model = loaded.model
    # Before the budget is spent: room for the new model beside an old one being replaced (fp32).
    check_writable(out.parent, 2 * sum(p.numel() * 4 for p in model.parameters()) + 16 * 2**20, "the pretrained model")
    tokenizer = WordPieceTokenizer.from_dir(loaded.source, max_length=cfg.max_length)
    if tokenizer.mask_id is None:
        raise UserError(f"{loaded.source}/vocab.txt has no {tokenizer.mask_token} token, so masked-LM training is impossible")

    skipped = []

    def warn(row) -> None:
        if isinstance(row, str):
            reporter.message(row)
        else:
            skipped.append(str(row))

    original, extra = collect_texts(cfg.data_dir, cfg.datasets, cfg.augmented, warn)
    if skipped:
        reporter.message(f"{len(skipped)} unusable row(s) skipped, e.g. {skipped[0]}")
    train_texts, held_texts = split_heldout(original, extra, cfg.heldout, cfg.heldout_max, cfg.seed)
    train_texts = balance(train_texts, cfg.caps, cfg.upsample, cfg.seed)
    train_data = MlmTexts(train_texts, tokenizer)
    held_data = MlmTexts(held_texts, tokenizer)
    if len(train_data) == 0:
        raise UserError("no training text left after the held-out split and caps; lower --heldout or raise --cap")
    if len(held_data) == 0:
        raise UserError("no held-out text (each dataset needs at least 2 examples); add data or raise --heldout")
    counts = {n: {"train": len(train_texts[n]), "heldout": len(held_texts[n]),
                  "augmented": len(extra.get(n, []))} for n in train_texts}
    reporter.message("text: " + ", ".join(f"{n} {c['train']} train / {c['heldout']} held out" for n, c in counts.items()))
    if not loaded.head_from_checkpoint:
        reporter.message(f"{loaded.source} has no masked-LM head: initialised a fresh one (BERT init)")

    model.to(device)
    model.tie_weights()
    eval_seed = stable_seed(cfg.seed, "heldout-masks")
    report: dict = {"source": str(loaded.source), "head": "checkpoint" if loaded.head_from_checkpoint else "initialised",
                    "texts": counts, "skipped_rows": len(skipped), "device": str(device)}

    def held_eval(label: str) -> dict:
        return evaluate_mlm(model, held_data, cfg.eval_batch_size, device, eval_seed, cfg.mask_prob,
                            quiet=False, label=label)

    steps_per_epoch = math.ceil(len(train_data) / cfg.batch_size)
    total = cfg.steps or max(1, round(cfg.epochs * steps_per_epoch))
    head_steps = cfg.head_steps
    if head_steps is None:  # a fresh head is fitted first, so "before" measures the encoder, not noise
        head_steps = 0 if loaded.head_from_checkpoint else max(1, total // 5)
    gen = torch.Generator().manual_seed(stable_seed(cfg.seed, "masks"))
    order_gen = torch.Generator().manual_seed(stable_seed(cfg.seed, "order"))
    random_ids = replacement_ids(tokenizer)

    def batches():
        while True:
            yield from bucketed_batches(train_data.lengths, cfg.batch_size, order_gen)

    stream = batches()

    def masked_loss(idx, head_only: bool) -> torch.Tensor:
        b = train_data.batch(idx)
        inputs, labels = mask_tokens(b.input_ids, special_mask(b.input_ids, b.attention_mask, tokenizer),
                                     tokenizer.mask_id, random_ids, gen, cfg.mask_prob)
        pos = labels != -100
        ids, att, pos_d = inputs.to(device), b.attention_mask.to(device), pos.to(device)
        if head_only:
            with torch.no_grad():
                hidden = model.hidden(ids, att)[pos_d]
            logits = model.cls(hidden)
        else:
            logits = model.masked_logits(ids, att, pos_d)
        return F.cross_entropy(logits.float(), labels[pos].to(device))

    if head_steps and not loaded.head_from_checkpoint:
        report["initial"] = held_eval("held-out MLM (fresh head)")
        reporter.message(f"held-out MLM with the fresh head: loss {report['initial']['loss']:.3f}, "
                         f"perplexity {report['initial']['perplexity']:.1f}")
    if head_steps:
        # Only the head's own tensors learn here (the tied decoder weight is the embeddings).
        head_params = [p for n, p in model.cls.named_parameters() if not n.endswith("decoder.weight")]
        head_opt = AdamW(head_params, lr=cfg.head_lr, weight_decay=0.0)
        embeddings = model.bert.embeddings.word_embeddings.weight
        embeddings.requires_grad_(False)  # the tied decoder weight stays put: skip its (vocab x hidden) gradient
        model.train()
        with progress_bar("fitting the MLM head", head_steps) as advance:
            for s in range(head_steps):
                loss = masked_loss(next(stream), head_only=True)
                head_opt.zero_grad(set_to_none=True)
                loss.backward()
                for g in head_opt.param_groups:
                    g["lr"] = scheduled_lr(s, head_steps, cfg.head_lr, 0.0)
                head_opt.step()
                advance()
        embeddings.requires_grad_(True)
        model.zero_grad(set_to_none=True)
    report["head_steps"] = head_steps

    report["before"] = held_eval("held-out MLM (before)")
    reporter.message(f"held-out MLM before: loss {report['before']['loss']:.3f}, perplexity {report['before']['perplexity']:.2f}")

    optimizer = AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr)
    model.train()
    t_train = time.perf_counter()
    window = ThroughputWindow(["mlm"], smart=False)
    losses = []
    with reporter:
        reporter.start(total, 0, steps_per_epoch)
        for step in range(total):
            idx = next(stream)
            loss = masked_loss(idx, head_only=False)
            if not math.isfinite(loss.item()):
                raise UserError(f"non-finite MLM loss at step {step + 1}; try a lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            lr = scheduled_lr(step, total, cfg.lr, cfg.warmup)
            for g in optimizer.param_groups:
                g["lr"] = lr
            optimizer.step()
            window.add(len(idx), {"mlm": loss.item()})
            if (step + 1) % cfg.log_every == 0 or step + 1 == total:
                rec = {"step": step + 1, "epoch": (step + 1) / steps_per_epoch, "lr": lr, **window.record()}
                losses.append({"step": step + 1, "loss": rec["loss"]["mlm"]})
                reporter.step(rec)
    train_s = time.perf_counter() - t_train

    report["after"] = held_eval("held-out MLM (after)")
    reporter.message(f"held-out MLM after: loss {report['after']['loss']:.3f}, perplexity {report['after']['perplexity']:.2f}")
    report.update(steps=total, steps_per_epoch=steps_per_epoch, epochs=total / steps_per_epoch, train_loss=losses,
                  train_s=train_s, config=dataclasses.asdict(cfg))

    with staged_dir(out) as staging:  # a failed write raises fsutil.WriteError: a clear message
        model.cpu()
        model.tie_weights()
        save_mlm(model, tokenizer, staging)
        report["wall_s"] = time.perf_counter() - t_start
        write_json(staging / "pretrain.json", report)
    return report
