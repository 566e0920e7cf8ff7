"""Differences with confidence: intervals over seeds, and paired bootstrap comparisons of runs.

Two questions a comparison of training options has to answer. How much does a configuration's
score move with the seed? `mean_ci`: the mean over seeds with Student's t interval (seeds are
few, so the normal interval would be too narrow). Is configuration B better than A on these dev
examples, or is the difference within the noise of which examples happen to be in dev?
`paired_bootstrap`: resample the dev examples both scored (with replacement, the same draw for
both and for every seed), rescore with the metric's own definition (evaluate.task_metrics), and
read the interval and a two-sided p-value of the difference off the resampled differences
(Koehn 2004; Berg-Kirkpatrick et al. 2012). Seeds are pooled and resampled too: each replicate
also draws the seeds with replacement (the same draw for both sides where they ran the same
seeds, which share data order and initialisation: a paired design) and scores each side as the
mean over the drawn seeds, so the interval covers the seed noise as well as the examples'.
"""

from __future__ import annotations

import math
from statistics import NormalDist

# Student's t quantiles t_{0.975, df} for df = 1..30 (beyond: the normal's 1.96 within 0.04).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    z = NormalDist().inv_cdf(0.975)
    # beyond the table: the first two terms of the Cornish-Fisher expansion (2.037 at df 31 for 2.040)
    return _T975[df - 1] if df <= len(_T975) else z * (1 + (z * z + 1) / (4 * df))


def mean_ci(values: list[float], within: tuple[float, float] | None = None) -> dict:
    """{"n", "mean", "sd", "lo", "hi"}: the 95% t interval of the mean (None bounds for n < 2),
    cut to `within` (the values the metric can take: tasks.metric_range)."""
    vs = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    n = len(vs)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "lo": None, "hi": None}
    m = sum(vs) / n
    if n == 1:
        return {"n": 1, "mean": m, "sd": None, "lo": None, "hi": None}
    sd = math.sqrt(sum((v - m) ** 2 for v in vs) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    lo, hi = m - half, m + half
    if within is not None:
        lo, hi = max(lo, within[0]), min(hi, within[1])
    return {"n": n, "mean": m, "sd": sd, "lo": lo, "hi": hi}


def score(outputs: dict, specs: dict, metric: str, index: dict | None = None) -> float | None:
    """A run's `metric` (a metric key such as sst_acc, or "overall") on its kept dev outputs
    ({task: (ids, outputs, labels)}), on the examples `index[task]` picks (all by default)."""
    from ..inference.evaluate import kept_metrics

    return kept_metrics(outputs, specs, index).get(metric)


def common_examples(runs: list[dict]) -> dict[str, list[int]]:
    """Per task, the positions (in the first run's order) of the examples every run scored, and
    each run reordered to them: {task: ids}; the runs' outputs are aligned by align()."""
    tasks = [t for t in runs[0] if all(t in r for r in runs)]
    common = {}
    for t in tasks:
        ids = set(runs[0][t][0])
        for r in runs[1:]:
            ids &= set(r[t][0])
        common[t] = [i for i in runs[0][t][0] if i in ids]
    return common


def align(run: dict, common: dict[str, list]) -> dict:
    """A run's kept outputs restricted to the common example ids, in their order."""
    import torch

    out = {}
    for t, ids in common.items():
        pos = {i: k for k, i in enumerate(run[t][0])}
        idx = torch.tensor([pos[i] for i in ids], dtype=torch.long)
        out[t] = (ids, run[t][1][idx], run[t][2][idx])
    return out


def paired_bootstrap(a: list[dict], b: list[dict], specs: dict, metric: str = "overall", n: int = 1000,
                     seed: int = 0) -> dict:
    """B's score minus A's on the dev examples all their runs scored, pooled over seeds (the runs
    of each side): {"diff", "lo", "hi", "p", "n_examples", "replicates", "within_noise"}.

    p is two-sided: twice the smaller share of replicates on either side of zero (capped at 1),
    so identical predictions give p = 1 and an interval of [0, 0]. Seeded: the same call gives
    the same numbers."""
    import torch

    common = common_examples(a + b)
    a, b = [align(r, common) for r in a], [align(r, common) for r in b]

    def side(runs, index=None, picks=None):
        vals = [score(runs[j], specs, metric, index) for j in (range(len(runs)) if picks is None else picks)]
        vals = [v for v in vals if v is not None and math.isfinite(v)]
        return sum(vals) / len(vals) if vals else None

    none = {"diff": None, "lo": None, "hi": None, "p": None, "n_examples": {t: len(i) for t, i in common.items()},
            "replicates": 0, "within_noise": None}
    base_a, base_b = side(a), side(b)
    if base_a is None or base_b is None:
        return none
    g = torch.Generator().manual_seed(seed)
    paired_seeds = len(a) == len(b)

    def draw(n_runs: int) -> list[int]:
        return torch.randint(n_runs, (n_runs,), generator=g).tolist() if n_runs > 1 else [0]

    diffs = []
    for _ in range(n):
        index = {t: torch.randint(len(ids), (len(ids),), generator=g) for t, ids in common.items()}
        pa = draw(len(a))
        pb = pa if paired_seeds else draw(len(b))
        sa, sb = side(a, index, pa), side(b, index, pb)
        if sa is not None and sb is not None:
            diffs.append(sb - sa)
    if not diffs:  # every replicate undefined (e.g. a correlation over a constant resample)
        return {**none, "diff": base_b - base_a}
    diffs.sort()
    k = len(diffs)
    lo, hi = diffs[int(0.025 * (k - 1))], diffs[int(math.ceil(0.975 * (k - 1)))]
    below, above = sum(d <= 0 for d in diffs) / k, sum(d >= 0 for d in diffs) / k
    p = min(1.0, 2 * min(below, above))
    return {"diff": base_b - base_a, "lo": lo, "hi": hi, "p": p, "n_examples": {t: len(i) for t, i in common.items()},
            "replicates": k, "within_noise": lo <= 0 <= hi}


def describe_difference(c: dict | None) -> str:
    """A paired comparison in a table cell: '+0.012 [-0.004, +0.027], p 0.140, within noise'."""
    if not c or c.get("diff") is None:
        return "—"
    if c.get("lo") is None:
        return f"{c['diff']:+.3f} (no interval: every resample undefined)"
    verdict = "within noise" if c["within_noise"] else ("better" if c["diff"] > 0 else "worse")
    # no replicate on the other side of zero: p is below what the replicates can resolve
    p = f"p < {1 / c['replicates']:.3g}" if c["p"] == 0 and c.get("replicates") else f"p {c['p']:.3f}"
    return f"{c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}], {p}, {verdict}"
