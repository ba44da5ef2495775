"""MMLoP's factor scales at initialization and what they do to the first SGD step (docs/METHOD.md).

    python bench/factor_scales.py [--width-text 512] [--width-vision 768] [--n-ctx 4] [--rank 1]
                                  [--depth 9] [--seed 1]

For ``P = U V`` with a loss gradient ``G = dL/dP``, SGD at learning rate ``lr`` moves ``V`` by
``lr U^T G`` and ``U`` by ``lr G V^T``, so to first order the prompt moves by
``lr (U U^T G + G V^T V)``. For rank 1 that is ``|u|^2`` times what a full-rank prompt (IVLP)
moves along ``u`` (new row content), ``|v|^2`` times along ``v`` (new mixing of the rows), and
``|u|^2 + |v|^2`` times along ``u v``, the prompt's own direction (the "step / full rank"
columns). The relative step of each factor is ``lr |G| |v| / |u|`` for ``U`` and
``lr |G| |u| / |v|`` for ``V`` (for comparable gradient components): their ratio is
``|u|^2 / |v|^2`` per tower (with ``U`` shared, the other tower's gradient adds to ``U``'s step,
so these ratios are upper bounds).

Prints ``|u|^2`` and ``|v|^2`` of the prompt learner as MMLoP builds it, averaged over seeds and
layers (``BALANCED_INIT`` False and True; ViT-B/16 widths by default; layer 0 random, as with
``CTX_INIT ''``), the prompt's step relative to a full-rank prompt's, and the relative-step
ratios. Exact arithmetic on the real initialization; no model or data is loaded.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch

from trainers.mmlop import MMLoPPromptLearner, MMLoPSettings


def factor_scales(settings: MMLoPSettings, text_dim: int, vision_dim: int, seeds: Sequence[int]) -> dict:
    """Means over ``seeds`` and layers (``SHARE_U modality``) of ``|u|^2`` (per rank column),
    ``|v_t|^2`` and ``|v_v|^2`` (per rank row); the first-order step of each tower's prompt relative
    to a full-rank prompt's (``|u|^2 + |v|^2``); and the relative steps ``V : U`` of each tower
    with that tower's gradient alone (``|u|^2 / |v|^2``; the other tower's gradient adds to ``U``'s
    step)."""
    r, rows = settings.rank, []
    for seed in seeds:
        torch.manual_seed(seed)
        learner = MMLoPPromptLearner(settings, text_dim, vision_dim)
        for i in range(settings.prompt_depth):
            u2 = learner.U[i].detach().pow(2).sum().item() / r
            vt2 = learner.V_text[i].detach().pow(2).sum().item() / r
            vv2 = learner.V_vision[i].detach().pow(2).sum().item() / r
            rows.append({"u2": u2, "v_text2": vt2, "v_vision2": vv2})
    m = {k: sum(row[k] for row in rows) / len(rows) for k in rows[0]}
    m.update(text_step=m["u2"] + m["v_text2"], vision_step=m["u2"] + m["v_vision2"],
             text_v_over_u=m["u2"] / m["v_text2"], vision_v_over_u=m["u2"] / m["v_vision2"])
    return m


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="MMLoP's factor scales at initialization.")
    parser.add_argument("--width-text", type=int, default=512)
    parser.add_argument("--width-vision", type=int, default=768)
    parser.add_argument("--n-ctx", type=int, default=4)
    parser.add_argument("--rank", type=int, default=1)
    parser.add_argument("--depth", type=int, default=9)
    parser.add_argument("--seeds", type=int, default=20, help="average over seeds 1..N (default 20)")
    args = parser.parse_args(argv)
    print(f"n {args.n_ctx}, rank {args.rank}, depth {args.depth}, D_t {args.width_text}, D_v {args.width_vision}, "
          f"means over {args.seeds} seeds and the layers")
    print("| init | abs(u)^2 | abs(v_t)^2 | abs(v_v)^2 | text step / full rank | vision step / full rank "
          "| relative step V_t : U | relative step V_v : U |")
    print("|---|---|---|---|---|---|---|---|")
    for balanced in (False, True):
        s = MMLoPSettings(n_ctx=args.n_ctx, rank=args.rank, prompt_depth=args.depth, ctx_init="",
                          balanced_init=balanced)
        m = factor_scales(s, args.width_text, args.width_vision, range(1, args.seeds + 1))
        print(f"| {'balanced' if balanced else 'default'} | {m['u2']:.3f} | {m['v_text2']:.3f} | {m['v_vision2']:.3f} "
              f"| {m['text_step']:.2f}x | {m['vision_step']:.2f}x | {m['text_v_over_u']:.1f} | "
              f"{m['vision_v_over_u']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
