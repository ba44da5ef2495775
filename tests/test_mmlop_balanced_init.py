"""``TRAINER.MMLOP.BALANCED_INIT``: equal-norm factors at initialization, the same initial prompts,
off by default, refused with full-rank prompts."""
from __future__ import annotations

import pytest
import torch

import trainers
from bench.factor_scales import factor_scales
from dassl.config import ConfigError, get_cfg_default
from trainers.mmlop import MMLoP, MMLoPPromptLearner, MMLoPSettings

INIT = torch.randn(4, 64, generator=torch.Generator().manual_seed(3)) * 0.02   # a CTX_INIT stand-in


def _pair(share_u: str, rank: int):
    learners = []
    for balanced in (False, True):
        torch.manual_seed(0)
        s = MMLoPSettings(n_ctx=4, rank=rank, prompt_depth=3, share_u=share_u, balanced_init=balanced)
        learners.append(MMLoPPromptLearner(s, text_dim=64, vision_dim=96, init_embeddings=INIT))
    return learners


def _factor_groups(learner):
    """(U, [the Vs it multiplies]) for every U of the learner."""
    share, depth = learner.settings.share_u, learner.settings.prompt_depth
    if share == "modality_and_layers":
        return [(learner.U, [*learner.V_text, *learner.V_vision])]
    if share == "modality":
        return [(learner.U[i], [learner.V_text[i], learner.V_vision[i]]) for i in range(depth)]
    return ([(learner.U_text[i], [learner.V_text[i]]) for i in range(depth)]
            + [(learner.U_vision[i], [learner.V_vision[i]]) for i in range(depth)])


@pytest.mark.parametrize("share_u", ["none", "modality", "modality_and_layers"])
@pytest.mark.parametrize("rank", [1, 2])
def test_balanced_factors_have_equal_norms_and_give_the_same_prompts(share_u, rank):
    default, balanced = _pair(share_u, rank)
    (a_text, a_vision), (b_text, b_vision) = default(), balanced()
    for a, b in zip([*a_text, *a_vision], [*b_text, *b_vision]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    for u, vs in _factor_groups(balanced):
        u_norm = u.detach().pow(2).sum(0)
        v_norm = sum(v.detach().pow(2).sum(1) for v in vs)
        torch.testing.assert_close(u_norm, v_norm, rtol=1e-5, atol=0)
    # The default is unbalanced: |u|^2 ~ n = 4 against |v|^2 ~ D * 0.02^2 / r.
    u, vs = _factor_groups(default)[-1]
    assert (u.detach().pow(2).sum(0) > 3 * sum(v.detach().pow(2).sum(1) for v in vs)).all()


def test_default_is_off_and_the_key_is_in_the_node():
    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    assert cfg.TRAINER.MMLOP.BALANCED_INIT is False
    assert MMLoPSettings.from_cfg(cfg.TRAINER.MMLOP).balanced_init is False


def test_full_rank_with_balanced_init_is_refused_naming_the_keys():
    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    cfg.TRAINER.MMLOP.FULL_RANK = True
    cfg.TRAINER.MMLOP.BALANCED_INIT = True
    with pytest.raises(ConfigError, match=r"^TRAINER\.MMLOP\.BALANCED_INIT = True is not allowed: .*"
                                          r"set it False with TRAINER\.MMLOP\.FULL_RANK True"):
        MMLoP.check_config(cfg, cfg.TRAINER.MMLOP, "TRAINER.MMLOP")
    with pytest.raises(ValueError, match="BALANCED_INIT"):
        MMLoPSettings(low_rank=False, balanced_init=True).validate(12, 12)


def test_factor_scales_of_vit_b16_are_the_documented_ones():
    """docs/METHOD.md: |u|^2 ~ 4, |v_t|^2 ~ 0.2, text step ~ 4.3x full rank, relative V_t : U ~ 20."""
    m = factor_scales(MMLoPSettings(ctx_init=""), 512, 768, range(1, 21))
    assert m["u2"] == pytest.approx(4.0, rel=0.1) and m["v_text2"] == pytest.approx(0.2048, rel=0.05)
    assert m["text_step"] == pytest.approx(4.3, rel=0.1) and m["text_v_over_u"] == pytest.approx(20, rel=0.15)
    b = factor_scales(MMLoPSettings(ctx_init="", balanced_init=True), 512, 768, range(1, 21))
    assert b["u2"] == pytest.approx(b["v_text2"] + b["v_vision2"], rel=1e-5)


@pytest.mark.parametrize("balanced", [False, True])
def test_one_sgd_step_is_the_first_order_formula_of_the_method_page(balanced):
    """docs/METHOD.md §3.1: one SGD step at a small ``lr`` on a loss ``<G, P>`` moves a rank-1
    prompt ``u v`` by ``-lr (u u^T G + G v^T v)``: ``|u|^2`` times a full-rank prompt's step along
    ``u`` (changes of the rows' content), ``|v|^2`` times it along ``v`` (changes of the mixing)."""
    torch.manual_seed(0)
    s = MMLoPSettings(n_ctx=4, rank=1, prompt_depth=1, ctx_init="", balanced_init=balanced)
    learner = MMLoPPromptLearner(s, text_dim=512, vision_dim=768)
    g = torch.randn(4, 512, generator=torch.Generator().manual_seed(1))
    u, v = learner.U[0].detach().clone(), learner.V_text[0].detach().clone()
    before = learner()[0][0].detach().clone()
    lr = 1e-4
    opt = torch.optim.SGD(learner.parameters(), lr=lr)
    (learner()[0][0] * g).sum().backward()
    opt.step()
    step = learner()[0][0].detach() - before
    predicted = -lr * (u @ u.t() @ g + g @ v.t() @ v)
    # The second-order term lr^2 (G v^T)(u^T G) and float32 rounding stay below 1% of the step.
    assert ((step - predicted).norm() / predicted.norm()).item() < 1e-2
    u2 = u.pow(2).sum().item()
    assert (u2 > 3.0) != balanced        # default |u|^2 ~ n = 4; balanced |v_t|^2 + |v_v|^2 ~ 1.4
