"""Tasks: specs as data (spec.py), what their heads output as behaviour (kinds.py), the CS224N
tasks (builtin.py) and tasks people declare (declared.py). Imports no torch."""

from .builtin import BASELINE_TASKS, BUILTIN, IMDB, MLM, SENTIMENT_LABELS, TASK_ALIASES, TASKS, spec_of
from .kinds import (CORRELATIONS, HEAD_FAMILY_NAMES, KINDS, POOLED, TOKENS, MASKED_LM, OUTPUT_KINDS, REGRESSION, SIGMOID, SOFTMAX, OutputKind,
                    as_number)
from .spec import (FILE_FORMATS, METRIC_SHORT, METRIC_SUFFIX, METRIC_TITLES, METRICS, NAME_PATTERN, UNDEFINED_EFFECT,
                   TaskSpec, dev_table_metrics, metric_labels, metric_range, metric_rows, overall_keys,
                   undefined_warnings)

__all__ = ["BASELINE_TASKS", "BUILTIN", "MASKED_LM", "MLM", "CORRELATIONS", "FILE_FORMATS", "HEAD_FAMILY_NAMES", "POOLED", "TOKENS", "IMDB", "KINDS", "METRICS", "METRIC_SHORT",
           "METRIC_SUFFIX", "METRIC_TITLES", "NAME_PATTERN", "OUTPUT_KINDS", "REGRESSION", "SENTIMENT_LABELS",
           "SIGMOID", "SOFTMAX", "TASKS", "TASK_ALIASES", "UNDEFINED_EFFECT", "OutputKind", "TaskSpec", "as_number",
           "dev_table_metrics", "metric_labels", "metric_range", "metric_rows", "overall_keys", "spec_of",
           "undefined_warnings"]
