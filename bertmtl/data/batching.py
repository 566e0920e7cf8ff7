"""Tokenised datasets, length-bucketed batches, and the round-robin order of a run's steps.

tasks/files.py reads the examples; `load_datasets` is the one way from specs and a split to
tokenised datasets (train and evaluate use it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..tasks.files import Example, TaskSource, read_tasks, stable_seed
from ..tasks import TaskSpec
from ..encoders.tokenizer import Batch, Encoded, EncoderTokenizer
from ..model.head_config import cross_encodes

# An output kind's label type (tasks/kinds.py) as a tensor's: class indices for cross-entropy.
LABEL_DTYPES = {"int": torch.long, "float": torch.float32}


@dataclass
class TaskBatch:
    """A batch for one task, carrying the task's spec (the step needs no lookup by name).

    `inputs` holds one row per sentence: B rows for single sentences and cross-encoded pairs,
    2B rows for bi-encoded pairs (all first sentences, then all second ones), so the encoder
    runs once per task batch with twice the rows instead of twice.
    """

    spec: TaskSpec
    inputs: Batch
    labels: torch.Tensor | None
    index: list[int]
    bi_pair: bool = False

    @property
    def task(self) -> str:
        return self.spec.name

    def to(self, device, non_blocking: bool = False) -> "TaskBatch":
        labels = self.labels.to(device, non_blocking=non_blocking) if self.labels is not None else None
        return TaskBatch(self.spec, self.inputs.to(device, non_blocking), labels, self.index, self.bi_pair)

    def pin_memory(self) -> "TaskBatch":
        return TaskBatch(self.spec, self.inputs.pin_memory(),
                         self.labels.pin_memory() if self.labels is not None else None, self.index, self.bi_pair)

    def __len__(self) -> int:
        return len(self.index)


class TaskDataset:
    """Examples of one task, tokenised once up front; batches are padded on demand."""

    def __init__(self, task: TaskSpec, examples: list[Example], tokenizer: EncoderTokenizer, pair_mode: str = "bi"):
        self.task = task
        self.examples = examples
        self.tokenizer = tokenizer
        self.cross = task.pair and cross_encodes(pair_mode)
        a = [e.text_a for e in examples]
        if not task.pair:
            self.encoded: list[list[Encoded]] = [tokenizer.encode(a)]
        elif self.cross:
            self.encoded = [tokenizer.encode(a, [e.text_b for e in examples])]
        else:
            self.encoded = [tokenizer.encode(a), tokenizer.encode([e.text_b for e in examples])]
        self.lengths = [max(len(enc[i].ids) for enc in self.encoded) for i in range(len(examples))]
        labelled = all(e.label is not None for e in examples)
        if not labelled:
            self.labels = None
        else:
            self.labels = torch.tensor([e.label for e in examples], dtype=LABEL_DTYPES[task.output.label_dtype])

    def __len__(self) -> int:
        return len(self.examples)

    def batch(self, index: list[int], pass_no: int | None = None) -> TaskBatch:
        inputs = self.tokenizer.pad([enc[i] for enc in self.encoded for i in index])
        labels = self.labels[index] if self.labels is not None else None
        return TaskBatch(self.task, inputs, labels, list(index), bi_pair=len(self.encoded) == 2)


def bucketed_batches(lengths: list[int], batch_size: int, generator: torch.Generator | None,
                     bucket: bool = True, window: int = 50) -> list[list[int]]:
    """Batches of similar length, in random order.

    Examples are shuffled, then sorted by length inside windows of `window` batches and cut
    into batches, and the batches are shuffled again: padding drops while every epoch still
    sees a different random grouping. With generator=None nothing is shuffled (evaluation).
    """
    n = len(lengths)
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    if bucket:
        span = batch_size * window
        chunks = [sorted(order[i:i + span], key=lambda j: lengths[j]) for i in range(0, n, span)]
        order = [j for c in chunks for j in c]
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if generator is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


class RoundRobin:
    """Each step takes one batch from every task; shorter datasets cycle.

    With `accum` K > 1 (gradient accumulation) a step's batch per task is K times larger and
    comes as K micro-batches: the same examples as one batch of K x batch_size.
    With `proportional`, a step takes a batch of each task with probability (its batches per
    pass) / (the largest task's): over an epoch every task goes through its data about once, so
    tasks are seen in proportion to their size; the largest is in every step.

    The order of each pass over a task is a pure function of (seed, task, pass number), and the
    tasks of a step a pure function of (seed, step), so the position (pass, batch) is the whole
    state: saved as JSON, it resumes the exact data order.
    """

    def __init__(self, datasets: dict[str, TaskDataset], batch_size: int, seed: int, bucket: bool = True,
                 shard: tuple[int, int] = (0, 1), accum: int = 1, proportional: bool = False):
        self.datasets = datasets
        self.batch_size = batch_size
        self.accum = accum
        self.seed = seed
        self.bucket = bucket
        self.proportional = proportional
        self.rank, self.world = shard
        self.state = {t: {"pass": 0, "pos": 0} for t in datasets}
        self._cache: dict[str, tuple[int, list[list[int]]]] = {}

    def _batches(self, task: str, n_pass: int) -> list[list[int]]:
        cached = self._cache.get(task)
        if cached and cached[0] == n_pass:
            return cached[1]
        # Mixed seeds are reduced modulo 2**63 (what a generator takes): the same value for every seed
        # below ~9e12, so runs repeat as before, and no overflow up to the largest seed (2**63-1).
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.datasets[task].task.seed_index * 7_919
                                           + n_pass) % 2**63)
        # Every rank draws the same global batches (global batch = per-rank batch x world) and
        # takes its own slice, so N ranks see exactly what one process with the global batch sees.
        batches = bucketed_batches(self.datasets[task].lengths, self.batch_size * self.accum * self.world, g,
                                   self.bucket)
        if self.world > 1:
            batches = [b[self.rank::self.world] for b in batches if len(b) >= self.world]
        self._cache[task] = (n_pass, batches)
        return batches

    def batches_per_pass(self, task: str) -> int:
        return len(self._batches(task, 0))

    def steps_per_epoch(self) -> int:
        """One pass over the largest task."""
        return max(self.batches_per_pass(t) for t in self.datasets)

    def tasks_at(self, step: int) -> list[str]:
        """The tasks that give a batch at this step (all of them, unless proportional)."""
        if not self.proportional:
            return list(self.state)
        sizes = {t: self.batches_per_pass(t) for t in self.state}
        most = max(sizes.values())
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + 104_729 + step) % 2**63)
        draws = torch.rand(len(sizes), generator=g).tolist()
        return [t for (t, n), u in zip(sizes.items(), draws) if u < n / most]  # u < 1: the largest always

    def next(self, step: int = 0) -> dict[str, TaskBatch | list[TaskBatch]]:
        """One batch of each task of this step (`step` matters only with proportional sampling);
        with accum > 1, each task's list of micro-batches."""
        out = {}
        chosen = self.tasks_at(step)
        for task, st in self.state.items():
            if task not in chosen:
                continue
            batches = self._batches(task, st["pass"])
            if st["pos"] >= len(batches):
                st["pass"], st["pos"] = st["pass"] + 1, 0
                batches = self._batches(task, st["pass"])
            index, ds, n_pass = batches[st["pos"]], self.datasets[task], st["pass"]
            if self.accum == 1:
                out[task] = ds.batch(index, n_pass)
            else:  # parts of ceil(n / accum) examples (a pass's last, short batch may give fewer parts)
                size = -(-len(index) // self.accum)
                out[task] = [ds.batch(index[i:i + size], n_pass) for i in range(0, len(index), size)]
            st["pos"] += 1
        return out

    def state_dict(self) -> dict:
        return {t: dict(s) for t, s in self.state.items()}

    def load_state_dict(self, state: dict) -> None:
        for t in self.state:
            if t in state:
                self.state[t] = {"pass": int(state[t]["pass"]), "pos": int(state[t]["pos"])}


def n_examples(batches: dict[str, TaskBatch | list[TaskBatch]]) -> int:
    """Examples in a step's batches (micro-batches included)."""
    return sum(sum(map(len, b)) if isinstance(b, list) else len(b) for b in batches.values())


def load_datasets(specs, split: str, source: TaskSource, tokenizer: EncoderTokenizer, pair_mode: str = "bi", *,
                  labelled: bool = True, warn=None, optional=lambda spec: False) -> tuple[dict, "object"]:
    """Tokenised datasets of each task's `split` (read_tasks' rules), and what was read (its skipped
    rows per file and absent tasks)."""
    by_name = {s.name: s for s in specs}
    read = read_tasks(specs, split, source, labelled=labelled, warn=warn, optional=optional)
    return {name: TaskDataset(by_name[name], ex, tokenizer, pair_mode) for name, ex in read.examples.items()}, read


# ----------------------------------------------------------------------------------------
# Masked-LM text


class MlmDataset:
    """Texts for masked-LM (the `mlm` task), tokenised once; each batch masks its examples.

    Every example's mask is drawn from (seed, pass, example), so it does not depend on the batch
    it lands in (data-parallel ranks mask as one process would) and a resumed run masks as the
    uninterrupted one; a held-out set (`fixed`) masks each example the same way at every
    evaluation, so scores before and after training compare the same tokens. BERT's masking: 15%
    of the non-special tokens chosen (at least one per text); 80% of those become the mask token,
    10% a random token, 10% stay.
    """

    def __init__(self, spec: TaskSpec, texts: dict[str, list[str]], tokenizer: EncoderTokenizer, seed: int,
                 mask_prob: float = 0.15, fixed: bool = False):
        self.task, self.tokenizer, self.seed, self.mask_prob, self.fixed = spec, tokenizer, seed, mask_prob, fixed
        self.sources = list(texts)
        self.source: list[int] = []
        self.encoded: list[Encoded] = []
        for k, name in enumerate(self.sources):
            if texts[name]:
                self.encoded += tokenizer.encode(texts[name])
                self.source += [k] * len(texts[name])
        self.lengths = [len(e.ids) for e in self.encoded]
        self.labels = None  # labels are drawn with the masks
        self._random_ids = replacement_ids(tokenizer)
        self._special = {tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id}

    def __len__(self) -> int:
        return len(self.encoded)

    def batch(self, index: list[int], pass_no: int | None = None) -> TaskBatch:
        tok = self.tokenizer
        masked, labels = [], []
        for i in index:
            ids = torch.tensor([self.encoded[i].ids])
            special = torch.tensor([[t in self._special for t in self.encoded[i].ids]])
            key = -1 if self.fixed or pass_no is None else pass_no
            g = torch.Generator().manual_seed(stable_seed(self.seed, "mask", key, i) % 2**63)
            inputs, lab = mask_tokens(ids, special, tok.mask_id, self._random_ids, g, self.mask_prob)
            masked.append(Encoded(inputs[0].tolist(), self.encoded[i].type_ids))
            labels.append(lab[0])
        inputs = tok.pad(masked)
        padded = torch.full(inputs.input_ids.shape, -100, dtype=torch.long)
        for r, lab in enumerate(labels):
            padded[r, :len(lab)] = lab
        return TaskBatch(self.task, inputs, padded, list(index))

    def truncated(self, i: int) -> bool:
        return self.encoded[i].truncated


def replacement_ids(tokenizer: EncoderTokenizer) -> torch.Tensor:
    """Token ids a masked position may be replaced by at random: every non-special token."""
    # [CLS]-style (BERT) and <s>-style (MPNet) specials.
    special = {i for t, i in tokenizer.vocab.items()
               if (t.startswith("[") and t.endswith("]")) or (t.startswith("<") and t.endswith(">"))}
    return torch.tensor(sorted(set(range(tokenizer.vocab_size)) - special), dtype=torch.long)


def mask_tokens(input_ids: torch.Tensor, special: torch.Tensor, mask_id: int, random_ids: torch.Tensor,
                generator: torch.Generator, prob: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: (inputs, labels); labels are -100 where nothing is to be predicted.

    Each non-special token is chosen with probability `prob`; a chosen token becomes the mask
    token 80% of the time, a random token 10%, and stays 10%. At least one token is chosen, so
    the loss is always defined.
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
