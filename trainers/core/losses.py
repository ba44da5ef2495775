"""Consistency (anchor) losses and uniform drift correction, on L2-normalized features.

Notation (docs/METHOD.md): ``t_hat [C, E]`` prompted text features, ``t_zs [C, E]``
frozen zero-shot text anchors, ``f [B, E]`` prompted image features, ``f_zs [B, E]`` frozen image
features of the same augmented batch, ``logits``/``zs_logits [B, C]`` with CLIP's logit scale.

* ``drift_correct(t_hat, t_zs)``: ``normalize(t_hat_c - mean_{c'}(t_hat_c' - t_zs_c'))`` over the
  classes given (the classes being scored), so the corrected residuals average to zero.
* ``kl_to_zero_shot(logits, zs_logits)``: PromptSRC's logit term,
  ``sum p_zs (log p_zs - log p) / logits.numel()`` (temperature 1 on top of CLIP's scale).
* ``consistency_loss(...)``: ``CE + w_t L1(t_hat, t_zs) + w_v L1(f, f_zs) + w_kl KL`` with mean
  L1 over elements; terms with weight 0 are skipped. Returns the loss and a dict of its parts.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def drift_correct(t_hat: torch.Tensor, t_zs: torch.Tensor) -> torch.Tensor:
    """Uniform drift correction over the given class set: ``[C, E]`` -> ``[C, E]`` normalized."""
    if t_hat.shape != t_zs.shape:
        raise ValueError(f"prompted text features {tuple(t_hat.shape)} and anchors "
                         f"{tuple(t_zs.shape)} must have the same shape")
    drift = (t_hat - t_zs).mean(dim=0, keepdim=True)
    return F.normalize(t_hat - drift, dim=-1)


def kl_to_zero_shot(logits: torch.Tensor, zs_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_zs || p) summed over all entries and divided by the number of logits (PromptSRC)."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    log_q = F.log_softmax(zs_logits.float(), dim=-1)
    return (log_q.exp() * (log_q - log_p)).sum() / logits.numel()


def consistency_loss(logits: torch.Tensor, labels: torch.Tensor, t_hat: torch.Tensor,
                     t_zs: torch.Tensor | None, f: torch.Tensor, f_zs: torch.Tensor | None,
                     zs_logits: torch.Tensor | None, text_weight: float, image_weight: float,
                     kl_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and ``{"loss_ce", "loss_text", "loss_image", "loss_kl"}`` (present terms only)."""
    ce = F.cross_entropy(logits.float(), labels)
    loss = ce
    parts = {"loss_ce": ce.item()}
    if text_weight:
        l_t = F.l1_loss(t_hat.float(), t_zs.float())
        loss = loss + text_weight * l_t
        parts["loss_text"] = l_t.item()
    if image_weight:
        l_v = F.l1_loss(f.float(), f_zs.float())
        loss = loss + image_weight * l_v
        parts["loss_image"] = l_v.item()
    if kl_weight:
        l_kl = kl_to_zero_shot(logits, zs_logits)
        loss = loss + kl_weight * l_kl
        parts["loss_kl"] = l_kl.item()
    return loss, parts
