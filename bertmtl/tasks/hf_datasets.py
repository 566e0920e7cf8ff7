"""A Hugging Face `datasets` dataset as a task's data: one split read as a task file is read.

`DatasetRows` has `RowSource`'s interface (tasks/files.py: a header, `require`, then
(row, get(column), reason) per row), so the declared tasks' column guessing, label reading and
row validation (empty texts, invalid text, labels outside the task's) apply to a dataset
unchanged, with the same warnings and `--strict`.

Where the dataset comes from:

- a directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` is read with
  `datasets.load_from_disk` (memory-mapped Arrow: nothing is copied);
- any other name goes to `datasets.load_dataset(NAME, CONFIG, split=...)`: a directory of data
  files (train.csv, validation.parquet, ...), or a Hub dataset, read from the local cache when it
  is there (`HF_DATASETS_OFFLINE=1` keeps it from the network).

A class label column (`ClassLabel`) is read as its class names, and those names, in the
dataset's order, are the task's labels unless the declaration gives others, so index 0 stays
class 0. The `datasets` library is an extra (`pip install "bertmtl[datasets]"`), imported only
when a task names a dataset.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

from ..errors import UserError, extra_hint

# The splits a dataset's dev data is looked for in when a declaration does not name one, in order.
DEV_SPLITS = ("validation", "dev", "valid", "val")


def _datasets():
    try:
        import datasets
    except ImportError:
        raise UserError("reading a Hugging Face dataset needs the datasets library: "
                        + extra_hint("datasets", "datasets")) from None
    return datasets


def is_saved(path: Path) -> bool:
    """Whether `path` is a directory written by save_to_disk (a Dataset or a DatasetDict)."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def describe(dataset: str, config: str = "") -> str:
    """How messages name a dataset: its name or directory, and its config."""
    return dataset + (f" ({config})" if config else "")


@lru_cache(maxsize=8)
def _load(dataset: str, config: str):
    """The dataset's splits: a DatasetDict (or a Dataset: one split, called "train"). Cached: a
    task's splits are opened for its spec, its label set and then its examples."""
    datasets = _datasets()
    # bertmtl's log says what is read; the library's progress bars and retry warnings would interleave with it.
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    path = Path(dataset).expanduser()
    what = describe(dataset, config)
    if path.is_file():
        raise UserError(f"dataset {what}: a file, not a dataset (a directory written by save_to_disk, a directory "
                        f"of data files, or a Hub name); a task's own file is NAME:KIND:FILE, and a file named hf "
                        f"is written ./hf")
    try:
        if path.is_dir() and is_saved(path):
            if config:
                raise UserError(f"dataset {what}: a directory written by save_to_disk has no configs; leave out "
                                f"the config")
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(dataset, config or None)
    except UserError:
        raise
    except Exception as e:  # datasets raises many types (DatasetNotFoundError, ValueError, FileNotFoundError, ...)
        why = _first_line(e)
        if e.__cause__ is not None:  # "An error occurred while generating the dataset", around what did
            why += f": {_first_line(e.__cause__)}"
        hint = "" if path.exists() else "; not a local directory either"
        raise UserError(f"dataset {what}: cannot load it ({why}){hint}") from None
    if isinstance(loaded, datasets.Dataset):
        return {"train": loaded}
    return dict(loaded)


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def rows_of(dataset: str, config: str, split: str) -> int:
    """How many rows a split has."""
    return len(_load(dataset, config)[split])


def splits(dataset: str, config: str = "") -> list[str]:
    """The names of a dataset's splits."""
    return list(_load(dataset, config))


def dev_split(dataset: str, config: str = "") -> str:
    """The split that holds dev data when a declaration names none: the first of DEV_SPLITS it has
    ("" when none: the task then has no dev set, as a file task without a dev file)."""
    have = splits(dataset, config)
    return next((s for s in DEV_SPLITS if s in have), "")


def _text(value) -> str | None:
    """A cell as a task file would hold it: strings as they are, numbers as written, null missing."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class DatasetRows:
    """The rows of one split of a dataset, read like a task file (files.RowSource's interface).

    Rows are numbered from 0, as the dataset indexes them (ds[i]); messages name the dataset and
    split ("my-data[train]:12: skipped row ...").
    """

    format = "hf"

    def __init__(self, dataset: str, config: str, split: str, what: str = "task data"):
        loaded = _load(dataset, config)
        if split not in loaded:
            raise UserError(f"dataset {describe(dataset, config)} has no split {split!r} (the {what}); it has "
                            f"{', '.join(loaded) or 'none'}")
        self.data = loaded[split]
        self.path = Path(dataset)
        # In errors, and in row warnings ("my-data[train]:12: skipped row ...").
        self.location, self.where = f"dataset {dataset}[{split}]", f"{self.path.name or dataset}[{split}]"
        self.header: list[str] = list(self.data.column_names)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def class_names(self, column: str) -> tuple[str, ...] | None:
        """The class names of a ClassLabel column, in index order (None for any other column)."""
        feature = self.data.features.get(column)
        names = getattr(feature, "names", None)
        return tuple(map(str, names)) if names else None

    def require(self, columns, hint_labelled: bool = True) -> None:
        missing = [c for c in columns if c not in self.header]
        if missing:
            raise UserError(f"{self.location}: missing column(s) {', '.join(missing)} (it has "
                            f"{', '.join(self.header) or 'none'})")

    def rows(self, columns, labelled: bool = True):
        """(row index, get(column) -> text or None, reason or None) for each row. A row is unusable as
        a whole where a column holds a list or a mapping (token lists, several labels: not a text or a
        label), or a class label column holds -1, datasets' mark of a missing label."""
        columns = list(dict.fromkeys(columns))
        names = {c: self.class_names(c) for c in columns}
        start = 0
        for batch in self.data.select_columns(columns).iter(batch_size=1024):
            n = len(batch[columns[0]]) if columns else 0
            for i in range(n):
                yield start + i, (lambda c, i=i, b=batch: self._cell(b[c][i], names.get(c))), \
                    self._problem({c: batch[c][i] for c in columns}, names)
            start += n

    @staticmethod
    def _problem(row: dict, names: dict) -> str | None:
        for c, v in row.items():
            if isinstance(v, (list, tuple, dict)):
                return f"{c} holds a {'mapping' if isinstance(v, dict) else 'list'}, not a text or a label"
            if names.get(c) is not None and isinstance(v, int) and not 0 <= v < len(names[c]):
                return f"{c} is {v} (a missing label)" if v == -1 else f"{c} {v} is not a class of the dataset"
        return None

    @staticmethod
    def _cell(value, names):
        if names is not None and isinstance(value, int):
            return names[value] if 0 <= value < len(names) else None  # -1 and the like: _problem says why
        return _text(value)
