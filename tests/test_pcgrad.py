"""PCGrad on hand-made gradients with exact expected results."""

from __future__ import annotations

import torch

from bertmtl.mtl import pcgrad


def t(*xs):
    return torch.tensor(xs, dtype=torch.float32)


def test_conflicting_pair_is_projected():
    # g1.g2 = -1 < 0: g1 -> g1 - (-1/2) g2 = (0.5, 0.5); g2 -> g2 - (-1/1) g1 = (0, 1).
    out = pcgrad([t(1, 0), t(-1, 1)])
    assert torch.allclose(out, t(0.5, 1.5), atol=1e-7)


def test_orthogonal_and_aligned_are_untouched():
    assert torch.equal(pcgrad([t(1, 0), t(0, 2)]), t(1, 2))
    assert torch.equal(pcgrad([t(1, 1), t(2, 2)]), t(3, 3))


def test_exactly_opposite_gradients_cancel_to_zero():
    # Each projection removes the whole vector: the surgery keeps nothing of either.
    assert torch.allclose(pcgrad([t(1, 2), t(-1, -2)]), t(0, 0), atol=1e-7)


def test_projection_removes_the_conflict():
    g1, g2 = t(3, 1, 0), t(-1, 2, 0)  # dot = -1
    out = pcgrad([g1, g2])
    p1 = g1 - (-1 / 5) * g2
    p2 = g2 - (-1 / 10) * g1
    assert torch.allclose(out, p1 + p2, atol=1e-6)
    assert abs(torch.dot(p1, g2).item()) < 1e-6  # the projected g1 no longer conflicts with g2


def _reference(grads, order):
    """PCGrad written plainly, with the visiting order given explicitly."""
    out = []
    for i, g in enumerate(grads):
        g = g.clone().double()
        for j in order[i]:
            gj = grads[j].double()
            d = torch.dot(g, gj)
            if d < 0:
                g = g - d / torch.dot(gj, gj) * gj
        out.append(g)
    return sum(out).float()


def test_three_tasks_match_plain_reference_with_same_order():
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(50, generator=g) for _ in range(3)]
    grads[2] = -0.8 * grads[0] + 0.1 * torch.randn(50, generator=g)  # a real conflict
    gen = torch.Generator().manual_seed(7)
    # Reproduce the order pcgrad draws: one permutation per task, the task itself removed.
    replay = torch.Generator().manual_seed(7)
    order = [[j for j in torch.randperm(3, generator=replay).tolist() if j != i] for i in range(3)]
    out = pcgrad(grads, gen)
    assert torch.allclose(out, _reference(grads, order), atol=1e-5)


def test_single_task_and_out_buffer():
    buf = torch.empty(2)
    res = pcgrad([t(1, -1)], out=buf)
    assert res is buf and torch.equal(buf, t(1, -1))
    res = pcgrad([t(1, 0), t(-1, 1)], out=buf)
    assert res is buf and torch.allclose(buf, t(0.5, 1.5))
