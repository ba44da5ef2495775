"""``build_optimizer``: an optimizer from ``cfg.OPTIM`` (Dassl's names and hyper-parameter keys)."""
from __future__ import annotations

from typing import Iterable, Optional, Union

import torch
import torch.nn as nn

AVAI_OPTIMS = ["adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw"]


def _param_groups(model_or_params, optim_cfg) -> list:
    lr = optim_cfg.LR
    if not isinstance(model_or_params, nn.Module):
        params = list(model_or_params)
        if optim_cfg.STAGED_LR:
            raise ValueError("OPTIM.STAGED_LR needs an nn.Module (its children are split by name), "
                             "not a parameter list")
        return params
    model = model_or_params.module if isinstance(model_or_params, nn.DataParallel) else model_or_params
    if not optim_cfg.STAGED_LR:
        return list(model.parameters())
    new_layers = optim_cfg.NEW_LAYERS
    if isinstance(new_layers, str):
        new_layers = [new_layers]
    if not new_layers:
        raise ValueError("OPTIM.STAGED_LR is True but OPTIM.NEW_LAYERS is empty")
    names = [name for name, _ in model.named_children()]
    unknown = [name for name in new_layers if name not in names]
    if unknown:
        raise ValueError(f"OPTIM.NEW_LAYERS {unknown} are not children of the model (children: {names})")
    base_params, new_params = [], []
    for name, module in model.named_children():
        (new_params if name in new_layers else base_params).extend(module.parameters())
    return [
        {"params": base_params, "lr": lr * optim_cfg.BASE_LR_MULT},
        {"params": new_params},
    ]


def build_optimizer(
    model_or_params: Union[nn.Module, Iterable],
    optim_cfg,
    param_groups: Optional[list] = None,
) -> torch.optim.Optimizer:
    """Build ``optim_cfg.NAME`` (adam, amsgrad, sgd, rmsprop, radam, adamw) with ``optim_cfg.LR``.

    ``model_or_params`` is an ``nn.Module`` (all its parameters; with ``STAGED_LR`` the children in
    ``NEW_LAYERS`` get ``LR`` and the rest ``LR * BASE_LR_MULT``), an iterable of parameters or of
    param-group dicts. ``param_groups``, if given, is used instead.
    """
    name = optim_cfg.NAME
    if name not in AVAI_OPTIMS:
        raise ValueError(f"optim must be one of {AVAI_OPTIMS}, but got {name}")
    params = param_groups if param_groups is not None else _param_groups(model_or_params, optim_cfg)
    lr, wd = optim_cfg.LR, optim_cfg.WEIGHT_DECAY
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=betas)
    if name == "amsgrad":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=betas, amsgrad=True)
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=optim_cfg.MOMENTUM,
            weight_decay=wd,
            dampening=optim_cfg.SGD_DAMPNING,
            nesterov=optim_cfg.SGD_NESTEROV,
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                                   alpha=optim_cfg.RMSPROP_ALPHA)
    if name == "radam":
        return torch.optim.RAdam(params, lr=lr, weight_decay=wd, betas=betas)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=betas)
