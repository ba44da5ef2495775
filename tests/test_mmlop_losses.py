"""Drift correction, the consistency loss and GPA against direct computations of the method
page's formulas on hand-made features."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainers.core.gpa import GaussianPromptAggregator, gpa_weights
from trainers.core.losses import consistency_loss, drift_correct, kl_to_zero_shot


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def test_drift_correction_formula_and_zero_mean_residual():
    t_hat, t_zs = _unit(5, 8, seed=0), _unit(5, 8, seed=1)
    mean_residual = sum(t_hat[c] - t_zs[c] for c in range(5)) / 5
    expected = torch.stack([(t_hat[c] - mean_residual) / (t_hat[c] - mean_residual).norm()
                            for c in range(5)])
    torch.testing.assert_close(drift_correct(t_hat, t_zs), expected)
    # before re-normalization the corrected residuals average to zero over the class set
    corrected = t_hat - (t_hat - t_zs).mean(0)
    assert (corrected - t_zs).mean(0).abs().max() < 1e-12
    out = drift_correct(t_hat, t_zs)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5, dtype=torch.float64))


def test_drift_is_computed_over_the_classes_being_scored():
    t_hat, t_zs = _unit(6, 8, seed=2), _unit(6, 8, seed=3)
    base, novel = slice(0, 3), slice(3, 6)
    on_novel = drift_correct(t_hat[novel], t_zs[novel])
    novel_mean = (t_hat[novel] - t_zs[novel]).mean(0)
    torch.testing.assert_close(on_novel, F.normalize(t_hat[novel] - novel_mean, dim=-1))
    base_mean = (t_hat[base] - t_zs[base]).mean(0)
    with_base_mean = F.normalize(t_hat[novel] - base_mean, dim=-1)
    assert not torch.allclose(on_novel, with_base_mean)
    with pytest.raises(ValueError, match="same shape"):
        drift_correct(t_hat[base], t_zs)


def test_kl_is_promptsrc_sum_over_number_of_logits():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], dtype=torch.float64)
    zs = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0]], dtype=torch.float64)
    total = 0.0
    for b in range(2):
        p = torch.softmax(logits[b], 0)
        q = torch.softmax(zs[b], 0)
        total += float((q * (q.log() - p.log())).sum())
    assert kl_to_zero_shot(logits, zs).item() == pytest.approx(total / 6, rel=1e-6)
    assert kl_to_zero_shot(zs, zs).item() == pytest.approx(0.0, abs=1e-7)


def test_consistency_loss_is_the_weighted_sum_of_its_terms():
    g = torch.Generator().manual_seed(0)
    logits, zs_logits = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    labels = torch.tensor([0, 2, 1, 1])
    t_hat, t_zs = _unit(3, 8, seed=4).float(), _unit(3, 8, seed=5).float()
    f, f_zs = _unit(4, 8, seed=6).float(), _unit(4, 8, seed=7).float()
    loss, parts = consistency_loss(logits, labels, t_hat, t_zs, f, f_zs, zs_logits, 25.0, 10.0, 1.0)
    ce = F.cross_entropy(logits, labels)
    l_t = (t_hat - t_zs).abs().mean()
    l_v = (f - f_zs).abs().mean()
    kl = kl_to_zero_shot(logits, zs_logits)
    assert loss.item() == pytest.approx((ce + 25 * l_t + 10 * l_v + kl).item(), rel=1e-6)
    assert parts == pytest.approx({"loss_ce": ce.item(), "loss_text": l_t.item(),
                                   "loss_image": l_v.item(), "loss_kl": kl.item()}, rel=1e-6)
    plain, parts = consistency_loss(logits, labels, t_hat, None, f, None, None, 0.0, 0.0, 0.0)
    assert plain.item() == pytest.approx(ce.item()) and list(parts) == ["loss_ce"]


def test_gpa_weights_and_average():
    w = gpa_weights(20, 15, 1)
    assert sum(w) == pytest.approx(1.0)
    assert max(range(20), key=lambda i: w[i]) == 14            # epoch 15 (1-based)
    assert w[14] == pytest.approx(0.3989, abs=1e-3)
    with pytest.raises(ValueError, match="GPA_STD"):
        gpa_weights(5, 1, 0)
    module = torch.nn.Linear(2, 1, bias=False)
    agg = GaussianPromptAggregator(3, 2, 1)
    values = []
    for epoch in (1, 2, 3):
        with torch.no_grad():
            module.weight.fill_(float(epoch))
        values.append(float(epoch))
        agg.add(epoch, module)
    agg.load_into(module)
    expected = sum(wi * v for wi, v in zip(agg.weights, values))
    torch.testing.assert_close(module.weight, torch.full((1, 2), expected))
    assert math.isclose(sum(agg.weights), 1.0)
