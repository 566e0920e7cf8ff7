"""Augmented copies of the training text (`bertmtl augment`), labels kept.

Methods: random swap and random deletion (nlpaug's RandomWordAug), WordNet synonyms (nlpaug's
SynonymAug on an offline WordNet), and contextual substitution by our own BERT + masked-LM
head. Output files have the CS224N format and names of the train files, so the directory
feeds `bertmtl train --augment DIR` and `bertmtl pretrain --augmented DIR`.

Every copy is a pure function of (seed, task, example id, copy number), so output does not
depend on which tasks or how many examples were asked for.
"""

from __future__ import annotations

import contextlib
import csv
import os
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from ..configuration.configs import AugmentConfig, parse_methods
from ..tasks.files import Example, TaskSource, augmented_spec, read_tasks, stable_seed, task_files
from ..errors import UserError
from ..runs.progress import progress_bar
from ..tasks import MLM

WORDNET_HELP = (
    "WordNet is not installed. Any one of these provides it:\n"
    "  - Debian/Ubuntu: `apt-get install wordnet-base` (files in /usr/share/wordnet; bertmtl adds "
    "the `lexnames` file nltk wants);\n"
    "  - with internet access: `python -c \"import nltk; nltk.download('wordnet')\"`;\n"
    "  - copy an nltk_data directory holding corpora/wordnet from another machine to ~/nltk_data, "
    "or set WNSEARCHDIR to a WordNet 3.0 `dict` directory.\n"
    "Or leave synonym out: --methods swap,delete,contextual.")

# Where WordNet 3.0 database files may already be on a machine.
WORDNET_DIRS = ("/usr/share/wordnet", "/usr/share/wordnet/dict", "/usr/local/WordNet-3.0/dict", "/usr/local/share/wordnet")
_WORDNET_NEEDED = tuple(f"{kind}.{pos}" for kind in ("index", "data") for pos in ("noun", "verb", "adj", "adv"))

# nltk's reader wants `lexnames` (Debian's wordnet-base lacks it): WordNet 3.0's 45
# lexicographer files, number, name and syntactic category (1 noun, 2 verb, 3 adj, 4 adv).
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)
_LEX_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

# Without a POS tagger every part of speech is a candidate, so function words (which WordNet
# gives odd senses: "a" -> "angstrom") are kept out by this list instead of by their tags.
STOPWORDS = frozenset("""a an the and or but nor so yet if then than that this these those there here of to in on at
by for with from into onto upon about as is am are was were be been being have has had do does did will would
shall should can could may might must not no i me my we us our you your he him his she her it its they them
their what which who whom whose when where why how all any both each few more most other some such only own
same too very s t just don 's n't 're 've 'd 'll 'm -lrb- -rrb- also""".split())


# -- options -------------------------------------------------------------------------------

# -- seeded, contained randomness ----------------------------------------------------------

@contextlib.contextmanager
def seeded(seed: int):
    """Seed Python's and NumPy's global generators (nlpaug draws from both); restore them after."""
    import numpy as np

    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _split(text: str) -> list[str]:
    # Whitespace tokens keep each file's own style (SST is pre-tokenised: "it 's good .").
    return text.split()


def _join(tokens: list[str]) -> str:
    return " ".join(tokens)


# -- nlpaug methods ------------------------------------------------------------------------

class NlpaugMethod:
    """One nlpaug word augmenter applied to one text at a time, seeded per text."""

    def __init__(self, name: str, augmenter, notes: dict | None = None):
        self.name = name
        self.augmenter = augmenter
        self.notes = notes or {}

    def augment(self, texts: list[str], seeds: list[int]) -> list[str]:
        out = []
        for text, seed in zip(texts, seeds):
            with seeded(seed):
                res = self.augmenter.augment(text)
            out.append(res[0] if isinstance(res, list) and res else res if isinstance(res, str) else text)
        return out


def random_word_method(action: str, aug_p: float) -> NlpaugMethod:
    """Random swap of neighbouring words, or random deletion (nlpaug RandomWordAug)."""
    import nlpaug.augmenter.word as naw

    aug = naw.RandomWordAug(action=action, aug_p=aug_p, aug_min=1, tokenizer=_split, reverse_tokenizer=_join)
    return NlpaugMethod("swap" if action == "swap" else "delete", aug)


def _nltk():
    try:
        import nltk
    except ImportError:
        raise UserError("the synonym method reads WordNet through nltk, which is not installed: `pip install nltk`. "
                        + WORDNET_HELP.splitlines()[-1]) from None
    return nltk


def wordnet_cache_root() -> Path:
    """An nltk data root inside bertmtl's cache, for the WordNet we assemble from system files."""
    from ..encoders.weights import home

    return home() / "nltk_data"


def _is_wordnet_dir(d: Path, need_lexnames: bool) -> bool:
    return all((d / f).is_file() for f in _WORDNET_NEEDED) and (not need_lexnames or (d / "lexnames").is_file())


def locate_wordnet() -> tuple[str, Path | None] | None:
    """Where WordNet can be read: ("cache", dir), ("nltk", None) for nltk's own data, ("system", dir); None if nowhere."""
    cached = wordnet_cache_root() / "corpora" / "wordnet"
    if _is_wordnet_dir(cached, need_lexnames=True):
        return "cache", cached
    try:
        import nltk

        nltk.data.find("corpora/wordnet")
        return "nltk", None
    except (ImportError, LookupError):
        pass
    dirs = ([os.environ["WNSEARCHDIR"]] if os.environ.get("WNSEARCHDIR") else []) + list(WORDNET_DIRS)
    for d in map(Path, dirs):
        if _is_wordnet_dir(d, need_lexnames=False):
            return "system", d
    return None


def build_wordnet_cache(source: Path) -> Path:
    """An nltk-readable copy of a WordNet 3.0 directory (about 30 MB) plus `lexnames`.

    A copy, not links: nltk only opens files under its data roots, resolves symlinks and
    refuses hard-linked files.
    """
    target = wordnet_cache_root() / "corpora" / "wordnet"
    staging = target.with_name(f".wordnet.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        for f in sorted(source.iterdir()):
            if f.is_file():
                shutil.copyfile(f, staging / f.name)
        if not (staging / "lexnames").is_file():
            (staging / "lexnames").write_text(
                "".join(f"{i:02d}\t{n}\t{_LEX_CATEGORY[n.split('.')[0]]}\n" for i, n in enumerate(LEXNAMES)),
                encoding="utf-8")
        if target.exists():  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
        else:
            os.replace(staging, target)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"could not prepare WordNet in {target} from {source} ({e.strerror or e})") from None
    return target


_READER = None


def wordnet_reader():
    """nltk's WordNet reader, from nltk's data or assembled from system files; a UserError when absent."""
    global _READER
    if _READER is not None:
        return _READER
    where = locate_wordnet()
    if where is None:
        raise UserError(WORDNET_HELP)
    nltk = _nltk()
    kind, path = where
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available": not used
            if kind == "nltk":
                from nltk.corpus import wordnet

                wordnet.ensure_loaded()
                reader = wordnet
            else:
                if kind == "system":
                    path = build_wordnet_cache(path)
                root = str(wordnet_cache_root())
                if root not in nltk.data.path:  # nltk opens files only under its data roots
                    nltk.data.path.append(root)
                from nltk.corpus.reader.wordnet import WordNetCorpusReader

                class _WordNet30Reader(WordNetCorpusReader):
                    # The mapping to "WordNet 3.0" that nltk builds for its multilingual data needs
                    # index.sense, which Debian ships separately; this *is* WordNet 3.0, so none is needed.
                    def map_wn(self, version="wordnet"):
                        return None

                reader = _WordNet30Reader(str(path), None)
            reader.synsets("good")
    except (LookupError, OSError, ValueError, AssertionError) as e:
        where_text = path if path is not None else "nltk's data path"
        raise UserError(f"WordNet in {where_text} could not be read ({type(e).__name__}: {e}). If that is bertmtl's "
                        f"copy, delete it and run again; otherwise reinstall WordNet:\n" + WORDNET_HELP.split("\n", 1)[1]) from None
    _READER = reader
    return reader


def pos_tagger_available() -> bool:
    """Whether nltk's POS tagger model is installed (it cannot be fetched here)."""
    nltk = _nltk()
    try:
        nltk.pos_tag(["test"])
        return True
    except (LookupError, OSError):
        return False


def synonym_method(aug_p: float) -> NlpaugMethod:
    """WordNet synonym replacement through nlpaug's SynonymAug, without network access.

    nlpaug's own WordNet wrapper calls nltk.download() when data is missing; ours is handed
    the reader found above. Without nltk's POS tagger, every token gets no tag, and nlpaug
    then takes candidates from all parts of speech (stopwords are excluded by list).
    """
    import nlpaug.augmenter.word as naw
    from nlpaug.model.word_dict import WordDictionary
    from nlpaug.model.word_dict import WordNet as NlpaugWordNet

    reader = wordnet_reader()
    tagged = pos_tagger_available()
    nltk = _nltk()

    class OfflineWordNet(NlpaugWordNet):
        def __init__(self):
            WordDictionary.__init__(self, cache=True)
            self.lang, self.is_synonym, self.model = "eng", True, reader

        @classmethod
        def pos_tag(cls, tokens):
            return nltk.pos_tag(tokens) if tagged else [(t, "") for t in tokens]

    class OfflineSynonymAug(naw.SynonymAug):
        def get_model(self, aug_src, lang, dict_path, force_reload):  # noqa: ARG002 - nlpaug's signature
            return OfflineWordNet()

    aug = OfflineSynonymAug(aug_p=aug_p, aug_min=1, stopwords=list(STOPWORDS), tokenizer=_split, reverse_tokenizer=_join)
    return NlpaugMethod("synonym", aug, {"pos_tagger": "nltk" if tagged else "none (candidates from all parts of speech)",
                                         "wordnet": str(getattr(reader, "root", "nltk"))})


# -- contextual substitution ---------------------------------------------------------------

class ContextualMethod:
    """Mask a fraction of the words and fill each with a prediction of our BERT + masked-LM head.

    Content words (not stopwords) are chosen. A chosen word becomes one [MASK] however many
    word pieces it had; the replacement is drawn (seeded, in proportion to the model's
    probability) from the top-k whole-word predictions that differ from the original word.
    """

    name = "contextual"

    def __init__(self, mlm_dir: str | Path | None, aug_p: float, device: str = "auto", top_k: int = 10,
                 batch_size: int = 32):
        import torch

        from ..model.device import pick_device
        from ..encoders.tokenizer import EncoderTokenizer
        from ..encoders.weights import load_mlm

        if mlm_dir is None:
            raise UserError("the contextual method needs --mlm DIR: a model with a masked-LM head. Run "
                            "`bertmtl pretrain --out DIR` first, or pass a BERT that has a masked-LM head "
                            "(bert-base-uncased has one; all-MiniLM-L6-v2 has none).")
        self.device = pick_device(device)
        loaded = load_mlm(mlm_dir, require_head=True, device=self.device)
        self.model = loaded.model.eval()
        self.tokenizer = EncoderTokenizer.from_dir(loaded.source)
        if self.tokenizer.mask_id is None:
            raise UserError(f"{loaded.source}/vocab.txt has no {self.tokenizer.mask_token} token")
        self.aug_p, self.top_k, self.batch_size = aug_p, top_k, batch_size
        vocab = self.tokenizer.vocab
        self.id_to_token = {i: t for t, i in vocab.items()}
        # Content words only: no word pieces, specials, punctuation, stray letters or stopwords
        # (an untuned head loves "the"; swapping function words rarely makes a useful paraphrase).
        allowed = torch.zeros(len(vocab), dtype=torch.bool)
        for t, i in vocab.items():
            if t.isalpha() and len(t) > 1 and t.lower() not in STOPWORDS:
                allowed[i] = True
        self.allowed = allowed.to(self.device)
        self.notes = {"mlm": str(loaded.source), "top_k": top_k}

    def _plan(self, text: str, seed: int):
        """Words, the indices to replace, and the input ids with those words as [MASK]."""
        words = text.split()
        rng = random.Random(seed)
        candidates = [i for i, w in enumerate(words) if w.isalpha() and w.lower() not in STOPWORDS]
        k = min(len(candidates), max(1, round(self.aug_p * len(words))))
        chosen = sorted(rng.sample(candidates, k)) if k else []
        return words, chosen, rng

    def augment(self, texts: list[str], seeds: list[int]) -> list[str]:
        import torch

        tok = self.tokenizer
        out = list(texts)
        for start in range(0, len(texts), self.batch_size):
            plans = [self._plan(t, s) for t, s in zip(texts[start:start + self.batch_size], seeds[start:start + self.batch_size])]
            # One encode call for every word of the batch: the Rust tokenizer does the work.
            flat = [w for words, _, _ in plans for w in words]
            pieces = [e.ids[1:-1] for e in tok.encode(flat)] if flat else []
            rows, masked = [], []
            o = 0
            for words, chosen, _ in plans:
                ids, where = [tok.cls_id], []
                chosen_set = set(chosen)
                for i in range(len(words)):
                    if i in chosen_set:
                        where.append((i, len(ids)))
                        ids.append(tok.mask_id)
                    else:
                        ids.extend(pieces[o + i])
                o += len(words)
                ids = ids[:tok.max_length - 1] + [tok.sep_id]
                rows.append(ids)
                masked.append([(i, p) for i, p in where if p < len(ids) - 1])  # truncated masks are dropped
            if not any(masked):
                continue
            n, t = len(rows), max(len(r) for r in rows)
            input_ids = torch.full((n, t), tok.pad_id, dtype=torch.long)
            attention = torch.zeros((n, t), dtype=torch.long)
            positions = torch.zeros((n, t), dtype=torch.bool)
            for r, (ids, where) in enumerate(zip(rows, masked)):
                input_ids[r, :len(ids)] = torch.tensor(ids)
                attention[r, :len(ids)] = 1
                for _, p in where:
                    positions[r, p] = True
            with torch.inference_mode():
                logits = self.model.masked_logits(MLM.name, input_ids.to(self.device), attention.to(self.device),
                                                  positions.to(self.device)).float()
                logits = logits.masked_fill(~self.allowed, float("-inf"))
                top = logits.topk(min(self.top_k + 1, int(self.allowed.sum())), dim=-1)
            values, indices = top.values.cpu(), top.indices.cpu()
            j = 0
            for r, ((words, _, rng), where) in enumerate(zip(plans, masked)):
                new = list(words)
                for i, _ in where:
                    options = [(self.id_to_token[int(ix)], float(v)) for ix, v in zip(indices[j], values[j])
                               if self.id_to_token[int(ix)] != words[i].lower()][:self.top_k]
                    j += 1
                    if not options:
                        continue
                    m = max(v for _, v in options)
                    weights = [2.718281828459045 ** (v - m) for _, v in options]
                    word = rng.choices([w for w, _ in options], weights=weights)[0]
                    new[i] = word.capitalize() if words[i][:1].isupper() else word
                out[start + r] = " ".join(new)
        return out


def build_method(name: str, cfg: AugmentConfig):
    """The augmenter for a method name."""
    if name in ("swap", "delete"):
        return random_word_method(name, cfg.aug_p)
    if name == "synonym":
        return synonym_method(cfg.aug_p)
    if name == "contextual":
        return ContextualMethod(cfg.mlm, cfg.aug_p, cfg.device, cfg.top_k)
    raise UserError(f"unknown augmentation method {name!r}")


# -- the run -------------------------------------------------------------------------------

def write_task_rows(path: Path, spec, examples: list[Example]) -> None:
    """Labelled examples as a file in the CS224N format (tab-separated, a header, CSV quoting), which
    every reader of augmented copies reads with `augmented_spec(spec)`."""
    t = augmented_spec(spec)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(["", t.id_column, *t.text_columns, t.label_column])
        for n, e in enumerate(examples):
            texts = [e.text_a] if not t.pair else [e.text_a, e.text_b]
            w.writerow([str(n), e.id, *texts, t.output.format_label(t, e.label)])
        fh.flush()
        os.fsync(fh.fileno())


# An unchanged copy is retried with other seeds this many times, then dropped.
RETRIES = 2


def augment(cfg: AugmentConfig, reporter=None) -> dict:
    """Write augmented copies of the chosen tasks' train files into cfg.out; returns the manifest."""
    from ..runs.ownership import owned_output
    from ..runs.progress import PlainReporter
    from ..tasks.declared import chosen_specs, column_flags

    t0 = time.perf_counter()
    reporter = reporter or PlainReporter()
    cfg.validate()  # every number finite and in range (configuration/options.py); --aug-p in (0, 1]
    specs = chosen_specs(cfg.tasks, cfg.task, cfg.tasks_file, column_flags(cfg))  # declared tasks' files are read here
    methods = parse_methods(",".join(cfg.methods))
    inputs = task_files(cfg.data_dir, {s.name: s for s in specs}, ("train",))
    with owned_output(cfg.out, cfg.overwrite, {**inputs, "--mlm": cfg.mlm,
                                               "--tasks-file": cfg.tasks_file}) as out:  # checked, and ours
        return _augment(cfg, specs, methods, out, reporter, t0)


def _augment(cfg: AugmentConfig, specs: list, methods: list[str], out: Path, reporter, t0: float) -> dict:
    from ..fsutil import staged_dir, write_json

    read = read_tasks(specs, "train", TaskSource(cfg.data_dir), warn=lambda row: reporter.message(f"warning: {row}"))
    data = {s.name: read.examples[s.name][:cfg.limit] if cfg.limit else read.examples[s.name] for s in specs}
    # Build every method before the long work, so a missing WordNet or MLM head fails at once.
    built = {m: build_method(m, cfg) for m in methods}

    manifest: dict = {"config": asdict(cfg), "methods": {m: getattr(b, "notes", {}) for m, b in built.items()}, "tasks": {}}
    with staged_dir(out) as staging:
        for spec in specs:
            name = spec.name
            rows, stats = _augment_task(spec, data[name], methods, built, cfg, reporter)
            write_task_rows(staging / spec.filename("train"), spec, rows)
            manifest["tasks"][name] = stats
            reporter.message(f"{name}: {stats['copies']} augmented copies of {stats['examples']} examples"
                             + (f" ({stats['unchanged_dropped']} unchanged copies dropped)" if stats["unchanged_dropped"] else ""))
        manifest["wall_s"] = time.perf_counter() - t0
        write_json(staging / "augment.json", manifest)
    return manifest


def _augment_task(spec, examples: list[Example], methods: list[str], built: dict, cfg: AugmentConfig,
                  reporter) -> tuple[list[Example], dict]:
    """Augmented copies of one task's examples: copy k of example i uses method (i + k) mod len(methods)."""
    name, pair = spec.name, spec.pair
    jobs: dict[str, list[tuple[int, int]]] = {m: [] for m in methods}
    for i in range(len(examples)):
        for k in range(cfg.times):
            jobs[methods[(i + k) % len(methods)]].append((i, k))
    result: dict[tuple[int, int], Example] = {}
    by_method = {m: 0 for m in methods}
    dropped = 0
    total = sum(len(j) for j in jobs.values())
    with progress_bar(f"augment {name}", total) as advance:
        for m, todo in jobs.items():
            method = built[m]
            pending = todo
            for attempt in range(RETRIES + 1):
                if not pending:
                    break
                sides = [("a", examples[i].text_a, i, k) for i, k in pending]
                if pair:
                    sides += [("b", examples[i].text_b, i, k) for i, k in pending]
                seeds = [stable_seed(cfg.seed, name, examples[i].id, k, side, m, attempt) for side, _, i, k in sides]
                texts = method.augment([s[1] for s in sides], seeds)
                new = {(s[0], s[2], s[3]): t for s, t in zip(sides, texts)}
                still = []
                for i, k in pending:
                    e = examples[i]
                    a, b = new[("a", i, k)], new.get(("b", i, k))
                    unchanged = a.strip() == e.text_a and (not pair or b.strip() == e.text_b)
                    emptied = not a.strip() or (pair and not b.strip())
                    if unchanged or emptied:
                        still.append((i, k))  # try another seed
                        continue
                    result[(i, k)] = Example(f"{e.id}-aug{k + 1}", a.strip(), b.strip() if pair else None, e.label, 0)
                    by_method[m] += 1
                    advance()
                pending = still
            dropped += len(pending)
            advance(len(pending))
    rows = [result[key] for key in sorted(result)]
    return rows, {"examples": len(examples), "copies": len(rows), "unchanged_dropped": dropped, "by_method": by_method}
