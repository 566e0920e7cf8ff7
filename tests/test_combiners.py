"""Every gradient combiner against TorchJD's implementation of the same method (a test-only
reference, like transformers), on random and real per-task gradients (2, 3 and 5 tasks, with
rank-deficient and exactly conflicting sets), and against its paper's definition on cases worked
by hand; then each one trains and resumes exactly through the CLI."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from bertmtl.mtl.combiners import REGISTRY, gram_matrix
from bertmtl.mtl.combiners.cagrad import cagrad_weights
from bertmtl.mtl.telemetry import ConflictWindow, step_stats
from bertmtl.runs.state import conflict_summary
from bertmtl.configuration.train_config import COMBINERS, TrainConfig

from .conftest import cli

A = pytest.importorskip("torchjd.aggregation")

CFG = SimpleNamespace(cagrad_c=0.4, nash_update_every=1, nash_max_norm=1.0, fairgrad_alpha=1.0, aligned_scale="min")


def _combiner(name, **kw):
    return REGISTRY[name].from_config(SimpleNamespace(**{**vars(CFG), **kw}), 0)


def _random_sets():
    """(name, T x 40 float64 gradient matrix): random, rank-deficient, exactly conflicting."""
    g = torch.Generator().manual_seed(0)
    for t in (2, 3, 5):
        for k in range(3):
            yield f"random{t}.{k}", torch.randn(t, 40, generator=g, dtype=torch.float64)
        j = torch.randn(t, 40, generator=g, dtype=torch.float64)
        j[-1] = 2.0 * j[0]  # two tasks with one direction
        yield f"rank-deficient{t}", j
        j = torch.randn(t, 40, generator=g, dtype=torch.float64)
        j[1] = -j[0]  # two tasks in exact conflict
        yield f"conflicting{t}", j


@pytest.fixture(scope="module")
def real_sets(tiny_bert_dir, data_dir):
    """Per-task encoder gradients of the tiny BERT on the fixture tasks (3 tasks; 2 = the first
    two; 5 = two more batches of SST and STS), as the training step's buffers hold them."""
    from bertmtl.data.batching import RoundRobin
    from bertmtl.training.setup import load_datasets
    from bertmtl.model import BertModel
    from bertmtl.model.heads import HeadConfig, MultitaskBert
    from bertmtl.mtl.step import MultitaskStep
    from bertmtl.encoders.tokenizer import EncoderTokenizer

    cfg = TrainConfig(data_dir=str(data_dir), batch_size=8, precision="fp32", smart=False, combine="mean")
    tok = EncoderTokenizer.from_dir(tiny_bert_dir)
    train_sets, _, _ = load_datasets(cfg, tok, warn=lambda row: None)
    torch.manual_seed(0)
    model = MultitaskBert(BertModel.from_pretrained(tiny_bert_dir), HeadConfig.of(cfg)).train()
    step = MultitaskStep(model, cfg, list(train_sets), torch.device("cpu"))
    rr = RoundRobin(train_sets, 8, seed=3)
    rows = []
    for s in range(2):
        step.backward(rr.next(s), s)
        rows += [step.grads.buffers[t].double().clone() for t in ("sst", "para", "sts")]
    three = torch.stack(rows[:3])
    return {"real2": three[:2], "real3": three, "real5": torch.stack(rows[:3] + [rows[3], rows[5]])}


def _all_sets(real_sets):
    yield from _random_sets()
    yield from real_sets.items()


def _close(ours, theirs, j, rel):
    """Within `rel` of the reference's norm, or of the gradients' scale where the answer is ~0."""
    scale = float(j.norm(dim=1).max())
    err = float((ours - theirs).norm())
    return err <= rel * float(theirs.norm()) + 1e-9 * scale, err / max(float(theirs.norm()), 1e-300)


# Combiners whose TorchJD reference agrees to 1e-5 on every set.
EXACT = {"sum": A.Sum, "mean": A.Mean, "upgrad": A.UPGrad, "dualproj": A.DualProj, "imtl-g": A.IMTLG,
         "aligned-mtl": A.AlignedMTL}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_combiners_equal_torchjd(name, real_sets):
    for case, j in _all_sets(real_sets):
        w = _combiner(name).weights(j @ j.T, [f"t{i}" for i in range(len(j))])
        ok, err = _close(w @ j, EXACT[name]()(j), j, 1e-5)
        assert ok, f"{case}: relative error {err:.2e}"


def test_aligned_mtl_scales_equal_torchjd(real_sets):
    for ours, theirs in (("median", "median"), ("mean", "rmse")):
        for case, j in _all_sets(real_sets):
            w = _combiner("aligned-mtl", aligned_scale=ours).weights(j @ j.T, list("abcde")[:len(j)])
            ok, err = _close(w @ j, A.AlignedMTL(scale_mode=theirs)(j), j, 1e-5)
            assert ok, f"{ours} {case}: {err:.2e}"


def test_pcgrad_and_random_draw_what_torchjd_draws(real_sets):
    """Both draw from a generator; seeded alike, TorchJD's global one gives the same numbers."""
    for name, ref in (("pcgrad", A.PCGrad), ("random", A.Random)):
        for case, j in _all_sets(real_sets):
            mine = _combiner(name)
            gen = next(iter(mine.generators().values()))
            gen.manual_seed(11)
            w = mine.weights(j @ j.T, [f"t{i}" for i in range(len(j))])
            torch.manual_seed(11)
            ok, err = _close(w @ j, ref()(j), j, 1e-5)
            assert ok, f"{name} {case}: {err:.2e}"


@pytest.mark.slow
def test_nash_mtl_and_fairgrad_equal_torchjd_and_solve_their_equation(real_sets):
    """The paper's equation (G w)_i = w_i^(-1/alpha) to machine precision; TorchJD's iterative
    solvers (ECOS, least squares) agree to 1e-5 where the equation has a solution (no two tasks in
    exact conflict; there both combine the gradients to almost nothing)."""
    for case, j in _all_sets(real_sets):
        t = len(j)
        gram = j @ j.T
        for alpha in (1.0, 2.0, 0.5):
            w = _combiner("fairgrad", fairgrad_alpha=alpha).weights(gram, list("abcde")[:t])
            if "conflicting" in case:
                # No solution: the pair's weights grow and cancel (up to the component along g1 that
                # balances the others), leaving the other tasks' own solution on their gradients
                # orthogonal to g1.
                rest = j[2:] - (j[2:] @ j[0]).unsqueeze(1) * j[0] / (j[0] @ j[0])
                expected = (_combiner("fairgrad", fairgrad_alpha=alpha).weights(rest @ rest.T, list("abc")[:t - 2])
                            @ rest) if t > 2 else torch.zeros(j.shape[1], dtype=torch.float64)
                assert float((w @ j - expected).norm()) < 1e-4 * float(j.norm(dim=1).max()), case
                continue
            assert torch.allclose(gram @ w, w.pow(-1.0 / alpha), rtol=1e-10)
            ok, err = _close(w @ j, A.FairGrad(alpha=alpha)(j), j, 1e-5)
            assert ok, f"fairgrad {alpha} {case}: {err:.2e}"
        mine = _combiner("nash-mtl", nash_max_norm=0.0)
        alpha = mine.weights(gram, list("abcde")[:t])
        if "conflicting" not in case:
            assert torch.allclose(gram @ alpha, 1 / alpha, rtol=1e-10)
            ok, err = _close(alpha @ j, A.NashMTL(n_tasks=t, max_norm=0.0)(j.float()).double(), j, 1e-5)
            assert ok, f"nash-mtl {case}: {err:.2e}"
        capped = _combiner("nash-mtl").weights(gram, list("abcde")[:t]) @ j
        assert float(capped.norm()) <= 1.0 + 1e-6  # --nash-max-norm 1 (from the Gram matrix: rounding where weights cancel)


@pytest.mark.slow
def test_mgda_is_the_exact_min_norm_point(real_sets):
    """TorchJD stops Frank-Wolfe after 100 steps or a step under 1e-3; the exact minimum-norm point
    (cvxpy's Clarabel at 1e-12 tolerances; 0 where two tasks conflict exactly) is the reference,
    and ours is never longer than TorchJD's."""
    cp = pytest.importorskip("cvxpy")
    for case, j in _all_sets(real_sets):
        t = len(j)
        w = _combiner("mgda").weights(j @ j.T, list("abcde")[:t])
        assert float(w.min()) >= 0 and abs(float(w.sum()) - 1) < 1e-12
        ours = w @ j
        scale = float(j.norm(dim=1).max())
        if "conflicting" in case:  # g1 = -g2: the hull holds 0, at w = (1/2, 1/2, 0, ...)
            assert float(ours.norm()) <= 1e-12 * scale, case
            continue
        x = cp.Variable(t)
        jn = (j / j.norm()).numpy()
        cp.Problem(cp.Minimize(cp.sum_squares(jn.T @ x)), [x >= 0, cp.sum(x) == 1]).solve(
            cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        exact = torch.from_numpy(jn.T @ x.value) * j.norm()
        assert float((ours - exact).norm()) <= 1e-5 * float(exact.norm()) + 1e-6 * scale, case
        assert float(ours.norm()) <= float(A.MGDA()(j).norm()) * (1 + 1e-9) + 1e-12 * scale, case


@pytest.mark.slow
def test_cagrad_is_at_least_as_good_as_torchjds(real_sets):
    """TorchJD solves CAGrad's dual with Clarabel at its default tolerance (~1e-8 in the objective);
    ours reaches a lower objective everywhere and the same update to 1e-4."""
    for c in (0.2, 0.4, 0.8):
        for case, j in _all_sets(real_sets):
            t = len(j)
            gram = j @ j.T
            w = cagrad_weights(gram, c)
            ok, err = _close(w @ j, A.CAGrad(c=c)(j), j, 1e-4)
            assert ok, f"c={c} {case}: {err:.2e}"
            theirs = A.CAGradWeighting(c=c)(gram)
            g, u = gram / gram.trace(), torch.full((t,), 1.0 / t, dtype=torch.float64)
            s = c * math.sqrt(float(u @ g @ u))

            def objective(wts):
                d = wts - u  # (s / |g_w|) w: its direction is the simplex point w
                if float(d.sum()) <= 0:
                    return float("inf")
                x = d / d.sum()
                return float((g @ u) @ x) + s * math.sqrt(max(float(x @ g @ x), 0.0))
            assert objective(w) <= objective(theirs) + 1e-12, case


# -- the papers' definitions, worked by hand ------------------------------------------------------

def _g(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_hand_worked_cases():
    orth = _g([1.0, 0.0], [0.0, 2.0])  # orthogonal, norms 1 and 2
    gram = orth @ orth.T
    two = ["a", "b"]
    # MGDA: min |w1 (1,0) + w2 (0,2)|^2 = w1^2 + 4 w2^2 on the simplex: w = (0.8, 0.2).
    assert torch.allclose(_combiner("mgda").weights(gram, two), _g(0.8, 0.2))
    # IMTL-G: equal projections on the unit gradients: w = G^-1 (1, 2), normalised = (2/3, 1/3) -> d = (2/3, 2/3).
    assert torch.allclose(_combiner("imtl-g").weights(gram, two) @ orth, _g(2 / 3, 2 / 3))
    # Nash-MTL (uncapped): G alpha = 1/alpha, G = diag(1, 4): alpha_i = 1 / |g_i|.
    assert torch.allclose(_combiner("nash-mtl", nash_max_norm=0.0).weights(gram, two), _g(1.0, 0.5))
    # FairGrad: |g_i|^2 w_i = w_i^(-1/alpha) -> w_i = |g_i|^(-2 alpha / (alpha + 1)); alpha 1: (1, 1/2).
    for a in (1.0, 3.0):
        assert torch.allclose(_combiner("fairgrad", fairgrad_alpha=a).weights(gram, two),
                              _g(1.0, 2.0 ** (-2 * a / (a + 1))))
    # Without conflict, UPGrad and DualProj are the mean; CAGrad with c = 0 too.
    for name in ("upgrad", "dualproj"):
        assert torch.allclose(_combiner(name).weights(gram, two), _g(0.5, 0.5), atol=1e-12)
    assert torch.allclose(cagrad_weights(gram, 0.0), _g(0.5, 0.5))
    # Aligned-MTL: orthogonal rows, singular values 1 and 2 scaled to the smallest: both unit, / T.
    assert torch.allclose(_combiner("aligned-mtl").weights(gram, two) @ orth, _g(0.5, 0.5))
    # A conflict: g1 = (1, 0), g2 = (-1, 1). UPGrad's and DualProj's update conflicts with neither
    # (each task's loss does not increase to first order), and PCGrad's is the paper's formula.
    conf = _g([1.0, 0.0], [-1.0, 1.0])
    gc = conf @ conf.T
    for name in ("upgrad", "dualproj", "mgda", "cagrad"):
        d = _combiner(name).weights(gc, two) @ conf
        assert float((conf @ d).min()) >= -1e-9, name
    assert torch.allclose(_combiner("pcgrad").weights(gc, two) @ conf, _g(0.5, 1.5))


def test_every_combiner_survives_degenerate_gram_matrices():
    """Zero gradients (the frozen encoder of --head-steps), one task, a non-finite step: finite
    weights, never an exception (the update is then zero, the task's gradient, or non-finite as
    with sum, which the training loop's non-finite check handles)."""
    for name in REGISTRY:
        c = _combiner(name)
        for gram, tasks in ((torch.zeros(3, 3, dtype=torch.float64), ["a", "b", "c"]),
                            (_g([4.0]), ["a"])):
            w = c.weights(gram, tasks)
            assert w.shape == (len(tasks),) and torch.isfinite(w).all(), name
        assert torch.equal(c(torch.full((2, 2), float("nan"), dtype=torch.float64), ["a", "b"]),
                           torch.ones(2, dtype=torch.float64))


def test_the_registry_is_the_option():
    assert tuple(REGISTRY) == COMBINERS
    for cls in REGISTRY.values():
        assert all(o in TrainConfig.fields() for o in cls.options), cls.name
        # the options the train check refuses under another --combine are exactly the method's own
        own = {n for n, f in TrainConfig.fields().items() if f.metadata["only_for"] and f.metadata["only_for"][0] ==
               "combine" and cls.name in f.metadata["only_for"][1]}
        assert own == set(cls.options), cls.name


def test_gram_matrix_and_telemetry():
    grads = [torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]), torch.tensor([0.0, 3.0])]
    gram = gram_matrix(grads)
    assert torch.equal(gram, _g([1, -1, 0], [-1, 2, 3], [0, 3, 9]))
    stats = step_stats(gram, torch.ones(3, dtype=torch.float64), ["sst", "para", "sts"])
    assert stats["cos"] == pytest.approx({"sst-para": -1 / math.sqrt(2), "sst-sts": 0.0,
                                          "para-sts": 3 / (math.sqrt(2) * 3)})
    assert stats["grad_norm"] == pytest.approx({"sst": 1.0, "para": math.sqrt(2), "sts": 3.0})
    assert stats["update_cos"] == pytest.approx(1.0) and stats["update_norm_ratio"] == pytest.approx(1.0)
    half = step_stats(gram, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), ["sst", "para", "sts"])
    s = torch.tensor([0.0, 4.0])  # the plain sum
    assert half["update_cos"] == pytest.approx(0.0) and half["update_norm_ratio"] == pytest.approx(1 / float(s.norm()))
    window = ConflictWindow()
    window.add(stats)
    window.add(half)
    rec = window.record()
    assert rec["conflict"]["sst-para"] == 1.0 and rec["conflicting"] == pytest.approx(1 / 3)
    assert rec["update_cos"] == pytest.approx(0.5) and rec["weight"]["para"] == pytest.approx(0.5)
    assert window.record() == {}  # a new window
    summary = conflict_summary([rec, {**rec, "cos": {**rec["cos"], "sst-para": 0.2}, "conflict": {"sst-para": 0.0}}])
    assert summary["sst-para"]["conflict_fraction"] == 0.5 and summary["sst-para"]["windows"] == 2
    assert summary["sst-para"]["min_cos"] == pytest.approx(-1 / math.sqrt(2))


# -- through training: every combiner trains, logs its telemetry and resumes exactly -----------

FAST = ["--batch-size", "8", "--lr", "1e-3", "--seed", "0", "--log-every", "1", "--precision", "fp32",
        "--dropout", "0", "--no-smart", "--eval-every", "2"]


@pytest.mark.slow
@pytest.mark.parametrize("name", COMBINERS)
def test_each_combiner_trains_logs_conflicts_and_resumes_exactly(name, tiny_bert_dir, data_dir, tmp_path):
    from safetensors.torch import load_file

    from bertmtl.sinks.metrics_log import read_records

    common = ["--encoder", tiny_bert_dir, "--data-dir", data_dir, "--max-steps", 4, "--combine", name,
              *(["--nash-update-every", 2] if name == "nash-mtl" else []), *FAST]
    cli("train", *common, "--out", tmp_path / "whole")
    cli("train", *common, "--out", tmp_path / "parts", "--stop-at-step", 2)
    cli("train", "--resume", tmp_path / "parts")
    a = load_file(str(tmp_path / "whole" / "last" / "multitask.safetensors"))
    b = load_file(str(tmp_path / "parts" / "last" / "multitask.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a), name
    steps = [r for r in read_records(tmp_path / "whole" / "metrics.jsonl")[0] if r["type"] == "train"]
    if name == "sum":  # one buffer for all tasks: no per-task gradients to compare
        assert "cos" not in steps[-1]
        return
    rec = steps[-1]
    assert set(rec["cos"]) == {"sst-para", "sst-sts", "para-sts"} and all(-1 <= c <= 1 for c in rec["cos"].values())
    assert set(rec["weight"]) == {"sst", "para", "sts"} and all(v > 0 for v in rec["grad_norm"].values())
    assert 0 <= rec["conflicting"] <= 1 and -1 <= rec["update_cos"] <= 1 + 1e-9
    if name == "mean":
        assert rec["weight"] == pytest.approx({"sst": 1 / 3, "para": 1 / 3, "sts": 1 / 3})
        assert rec["update_cos"] == pytest.approx(1.0) and rec["update_norm_ratio"] == pytest.approx(1 / 3)


def test_telemetry_reaches_csv_and_runs_json(tiny_bert_dir, data_dir, tmp_path):
    import csv

    run = tmp_path / "runs" / "r"
    cli("train", "--encoder", tiny_bert_dir, "--data-dir", data_dir, "--max-steps", 3, "--combine", "sum",
        "--telemetry", "on", "--report-to", "csv", "--out", run, *FAST)
    rows = list(csv.DictReader((run / "train.csv").open()))
    assert len(rows) == 3 and float(rows[-1]["update_cos"]) == pytest.approx(1.0)
    assert -1 <= float(rows[-1]["cos_sst-para"]) <= 1 and float(rows[-1]["weight_sts"]) == 1.0
    info = json.loads(cli("runs", "--runs-dir", tmp_path / "runs", "--json").stdout)[0]
    pairs = info["conflicts"]
    assert set(pairs) == {"sst-para", "sst-sts", "para-sts"} and pairs["sst-para"]["windows"] == 3
    assert 0 <= pairs["sst-para"]["conflict_fraction"] <= 1
