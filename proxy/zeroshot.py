"""Zero-shot accuracy of a CLIP on the synthetic test splits, rendered in memory (no files)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import clip
from datasets.synthetic import render_split
from datasets.synthetic_render import all_classes

from .data import DEFAULT_TEMPLATE, to_tensor, trim_tokens


@torch.no_grad()
def zeroshot_accuracy(model, style: str = "clean", held_out=(), batch_size: int = 500) -> dict[str, float]:
    """100-way accuracy (%) on the test split of ``style`` with the prompt "a photo of a {}.".

    Returns ``{"all": acc}`` plus ``"held_out"`` (accuracy on the images of the ``held_out``
    compositions, still 100-way) when ``held_out`` is given.
    """
    model.eval()
    names = [name for name, _, _ in all_classes()]
    tokens = trim_tokens(clip.tokenize([DEFAULT_TEMPLATE.format(n) for n in names]))
    text = F.normalize(model.encode_text(tokens).float(), dim=-1)
    labels, images = render_split(style, "test")
    labels = torch.tensor(labels)
    preds = []
    for i in range(0, len(images), batch_size):
        feats = F.normalize(model.encode_image(to_tensor(images[i:i + batch_size])).float(), dim=-1)
        preds.append((feats @ text.t()).argmax(dim=-1))
    correct = torch.cat(preds) == labels
    out = {"all": 100.0 * correct.float().mean().item()}
    if held_out:
        ids = torch.tensor([names.index(n) for n in held_out])
        mask = torch.isin(labels, ids)
        out["held_out"] = 100.0 * correct[mask].float().mean().item()
    return out
