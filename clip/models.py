"""``python -m clip.models [--all]``: the backbones ``MODEL.BACKBONE.NAME`` / ``clip.load`` accept.

Prints OpenAI's model names, then (with open_clip installed) every supported open_clip model with
its pretrained tags, the supported architectures without published weights (usable with a weights
file), and how many open_clip models are not supported; ``--all`` lists those with the reasons.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Sequence

from . import open_clip_models as ocm
from .clip import available_models


def _wrap(text: str, indent: str = "    ") -> str:
    return textwrap.fill(text, width=100, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_on_hyphens=False, break_long_words=False)


def describe(show_unsupported: bool = False) -> str:
    """The listing printed by ``python -m clip.models``."""
    lines = ["OpenAI CLIP (MODEL.BACKBONE.NAME <name>, downloaded to $CLIP_CACHE_DIR or ~/.cache/clip):",
             _wrap(", ".join(available_models())),
             "A local OpenAI-layout file: MODEL.BACKBONE.NAME /path/to/model.pt", ""]
    try:
        oc = ocm.import_open_clip()
    except ImportError as e:
        lines.append(f"open_clip models: {e}")
        return "\n".join(lines)
    supported = ocm.supported_models()
    with_tags = [(m, tags) for m, tags in supported if tags]
    without = [m for m, tags in supported if not tags]
    lines.append(f"open_clip {oc.__version__} models (MODEL.BACKBONE.NAME open_clip:<model>:<tag>, "
                 "downloaded by open_clip; or open_clip:<model>:/path/to/weights.bin|.pt|.safetensors):")
    for model, tags in with_tags:
        lines.append(_wrap(f"{model}: {', '.join(tags)}", "  "))
    if without:
        lines.append("Supported architectures without published weights (give a weights file):")
        lines.append(_wrap(", ".join(without), "  "))
    unsupported = ocm.unsupported_models()
    lines.append(f"Not supported (towers other than CLIP transformers): {len(unsupported)} open_clip models"
                 + ("" if show_unsupported else " (--all lists them with the reasons)"))
    if show_unsupported:
        for model, reasons in unsupported:
            lines.append(_wrap(f"{model}: {'; '.join(reasons)}", "  "))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clip.models", description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="also list the unsupported open_clip models")
    args = parser.parse_args(argv)
    print(describe(args.all))
    return 0


if __name__ == "__main__":
    sys.exit(main())
