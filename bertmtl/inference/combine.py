"""More from runs already trained: ensembles (the mean of several models' answers) and model soups
(one model whose weights are the mean of several's; Wortsman et al. 2022), with their dev scores.

`bertmtl ensemble`, `bertmtl soup` and `bertmtl sweep --ensemble / --soup` call these. An ensemble
is saved as a checkpoint of its own (runs/checkpoint.py `save_ensemble`: its members inside it),
which every answering surface loads like any other; a soup is an ordinary checkpoint.

Scores come from one evaluation of each model on the dev data (`Scored`: its dev outputs, kept as
a run keeps them): an ensemble's dev outputs are the mean of its members' (what `Ensemble`
computes, batch for batch), so ensembles of any subset are scored without another pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError


@dataclass
class DevData:
    """Where dev examples come from, as `bertmtl evaluate` reads them."""

    data_dir: str | Path
    dev_limit: int | None = None
    batch_size: int = 64
    device: str = "cpu"
    strict: bool = False


@dataclass
class Scored:
    """A model's dev evaluation: its metrics, its kept outputs ({task: (ids, outputs, labels)}, as
    runs/rundir.py keeps a run's) and the seconds it took."""

    metrics: dict
    outputs: dict
    seconds: float = 0.0

    @property
    def overall(self) -> float | None:
        return self.metrics.get("overall")


@dataclass
class Combined:
    """What `combine` built of some members: the checkpoints written and every score."""

    members: list[Path]
    specs: dict = field(default_factory=dict)  # the members' tasks, by name
    singles: list[Scored] = field(default_factory=list)
    scores: dict[str, Scored] = field(default_factory=dict)  # "ensemble", "ensemble of 2", "soup", ...
    greedy: list[int] = field(default_factory=list)  # positions in `members` the greedy soup kept, in order
    written: dict[str, Path] = field(default_factory=dict)


def load_members(sources: list, note=None) -> list:
    """Each source (a run directory: its best/, else its last/ with a note; or a checkpoint) loaded
    on the CPU; an ensemble among them is refused (its members are what to give)."""
    from ..runs.catalog import choose_checkpoint
    from ..runs.checkpoint import load_checkpoint

    if len(sources) < 2:
        raise UserError(f"give at least 2 runs or checkpoints to combine, not {len(sources)}")
    members = []
    for source in sources:
        choice = choose_checkpoint(source)
        if choice.note and note is not None:
            note(f"note: {choice.note}")
        ck = load_checkpoint(choice.path)
        if ck.members:
            raise UserError(f"{choice.path} is an ensemble already: give the runs it was built from")
        members.append(ck)
    return members


def dev_sets(ck, data: DevData, note=None) -> dict:
    """The dev datasets of the checkpoint's answering tasks, tokenised with its tokenizer."""
    from ..data.batching import load_datasets
    from ..tasks.files import TaskSource

    specs = [s for s in ck.model.specs.values() if s.output.answers]
    source = TaskSource(str(data.data_dir), strict=data.strict, dev_limit=data.dev_limit)
    warn = (lambda row: note(f"warning: {row}")) if note is not None else None
    datasets, _ = load_datasets(specs, "dev", source, ck.tokenizer, ck.model.cfg.pair_mode, labelled=True, warn=warn)
    if not datasets:
        raise UserError(f"{data.data_dir}: no dev data for {', '.join(s.name for s in specs)}; nothing to score on")
    return datasets


def score(model, datasets: dict, data: DevData, progress=None) -> Scored:
    """One model's dev evaluation, its outputs kept (the model is evaluated in fp32)."""
    from ..model.device import pick_device
    from .evaluate import evaluate

    kept: dict = {}
    device = pick_device(data.device)
    model.to(device)
    start = time.perf_counter()
    metrics = evaluate(model, datasets, data.batch_size, device, progress=progress, keep=kept)
    return Scored(metrics, kept, time.perf_counter() - start)


def mean_scored(parts: list[Scored], specs: dict) -> Scored:
    """The ensemble of models scored in `parts`: their mean outputs, and the metrics of those."""
    from .evaluate import kept_metrics

    outputs = {task: (ids, torch.stack([p.outputs[task][1].float() for p in parts]).mean(0), labels)
               for task, (ids, _, labels) in parts[0].outputs.items()}
    return Scored(kept_metrics(outputs, specs), outputs, sum(p.seconds for p in parts))


def average_weights(members: list, weights: list[float] | None = None) -> dict[str, torch.Tensor]:
    """The mean of the members' state dicts, tensor by tensor (accumulated in float64, stored in each
    tensor's own dtype: the soup of a model with itself is that model, bit for bit); integer tensors
    (buffers) must be equal and are kept."""
    states = [m.model.state_dict() for m in members]
    weights = weights or [1.0 / len(states)] * len(states)
    out = {}
    for key, first in states[0].items():
        if not first.is_floating_point():
            if any(not torch.equal(first, s[key]) for s in states[1:]):
                raise UserError(f"{members[1].path}: its {key} differs, and it is not a weight to average")
            out[key] = first.clone()
            continue
        acc = torch.zeros_like(first, dtype=torch.float64)
        for w, s in zip(weights, states):
            acc += w * s[key].double()
        out[key] = acc.to(first.dtype)
    return out


def souped(members: list):
    """A copy of the first member's model holding the mean of the members' weights."""
    import copy

    model = copy.deepcopy(members[0].model)
    model.load_state_dict(average_weights(members))
    return model.eval()


def combine(sources: list, *, ensemble: Path | None = None, soup: Path | None = None,
            greedy_soup: Path | None = None, data: DevData | None = None, subsets: bool = False,
            overwrite: bool = False, note=None, progress=None, command: str | None = None) -> Combined:
    """Build (and score on dev, given `data`) what is asked of the runs or checkpoints `sources`:
    the ensemble of them all (written to `ensemble`), their uniform soup (`soup`), their greedy soup
    (`greedy_soup`: members taken in order of dev score, each kept only if the soup's dev overall
    does not drop). With `subsets`, also the ensembles of the first 2, 3, ... members (in the order given).
    Every output directory is checked before anything is loaded or scored."""
    import contextlib

    from ..runs.checkpoint import check_members, save_ensemble
    from ..runs.ownership import owned_output

    note = note or (lambda text: None)
    if greedy_soup is not None and data is None:
        raise UserError("a greedy soup keeps each member only if the dev score does not drop: give the dev data "
                        "(--data-dir)")

    members = load_members(sources, note)
    result = Combined([Path(m.path) for m in members], dict(members[0].model.specs))
    specs = members[0].model.specs
    with contextlib.ExitStack() as outs:
        # The outputs are claimed before anything slow: a taken directory is said at once.
        inputs = {f"member {i}": m.path for i, m in enumerate(members, 1)}
        if data is not None:
            inputs["--data-dir"] = data.data_dir
        targets = {name: outs.enter_context(owned_output(path, overwrite, inputs, derived=True))
                   for name, path in (("ensemble", ensemble), ("soup", soup), ("greedy soup", greedy_soup))
                   if path is not None}
        check_members(members, soup=soup is not None or greedy_soup is not None)
        _warn_of(members, soup is not None or greedy_soup is not None, note)
        datasets = dev_sets(members[0], data, note) if data is not None else None

        def scored(model, what: str) -> Scored:
            note(f"scoring {what} on dev")
            return score(model, datasets, data, progress)

        if datasets is not None:
            result.singles = [scored(m.model, f"member {i} ({m.path})") for i, m in enumerate(members, 1)]
            for k in range(2, len(members)) if subsets else ():  # the first k, as a user with k runs has them
                result.scores[f"ensemble of {k}"] = mean_scored(result.singles[:k], specs)
            if ensemble is not None or subsets:
                result.scores["ensemble"] = mean_scored(result.singles, specs)
        if "ensemble" in targets:
            metrics = result.scores["ensemble"].metrics if datasets is not None else None
            save_ensemble(targets["ensemble"], members, metrics, command)
            result.written["ensemble"] = targets["ensemble"]
        if "soup" in targets:
            model = souped(members)
            if datasets is not None:
                result.scores["soup"] = scored(model, f"the soup of {len(members)}")
            _save_soup(targets["soup"], model, members, list(range(len(members))),
                       result.scores.get("soup"), command, greedy=False)
            result.written["soup"] = targets["soup"]
        if "greedy soup" in targets:
            order = sorted(range(len(members)), key=lambda i: -(result.singles[i].overall or float("-inf")))
            kept, best = [order[0]], result.singles[order[0]]
            for i in order[1:]:
                trial = scored(souped([members[j] for j in (*kept, i)]), f"the soup with member {i + 1} added")
                if (trial.overall or float("-inf")) >= (best.overall or float("-inf")):
                    kept, best = [*kept, i], trial
            result.greedy, result.scores["greedy soup"] = kept, best
            model = souped([members[j] for j in kept]) if len(kept) > 1 else members[kept[0]].model
            _save_soup(targets["greedy soup"], model, members, kept, best, command, greedy=True)
            result.written["greedy soup"] = targets["greedy soup"]
    return result


def _warn_of(members: list, soup: bool, note) -> None:
    """Notes on members that combine, but not as the user may think: one given twice (it counts twice),
    and, for a soup, runs whose heads started from different initialisations (their mean averages
    unrelated hidden units: runs that share --init-seed soup well)."""
    seen: dict = {}
    for m in members:
        where = Path(m.path).resolve()
        if where in seen:
            note(f"note: {m.path} is given twice (as {seen[where]} too): it counts twice in the mean")
        seen.setdefault(where, m.path)
    if soup:
        args = [m.train_args for m in members]
        inits = [a.get("init_seed") if a.get("init_seed") is not None else a.get("seed") for a in args]
        if len(set(map(str, inits))) > 1:
            note(f"note: these runs' heads started from different initialisations (init seeds "
                 f"{', '.join(map(str, inits))}): the soup averages head units that did not start alike; runs that "
                 f"share --init-seed and differ in --seed start from one point (docs: Ensembles and soups)")


def _save_soup(target: Path, model, members: list, kept: list[int], scored: Scored | None, command: str | None,
               greedy: bool) -> None:
    from ..runs.checkpoint import save_checkpoint
    from ..runs.rundir import SOUP

    first = members[kept[0]]
    about = {"members": [str(Path(members[i].path).resolve()) for i in kept], "greedy": greedy,
             "candidates": [str(Path(m.path).resolve()) for m in members], "command": command}
    save_checkpoint(target, model, first.tokenizer, step=first.info.get("step", 0), epoch=first.info.get("epoch", 0),
                    train_args=first.train_args, metrics=scored.metrics if scored is not None else None,
                    tasks=first.tasks, extra={SOUP: about})
