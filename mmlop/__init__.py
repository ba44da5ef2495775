"""One way in to the project's commands: ``python -m mmlop <command> [arguments]``.

From the repository root, or from anywhere once ``pip install -e .`` has made the packages
importable (see ``setup.py``). Each command is the ``main`` of the module that owns it; the CoOp-family
entry points (``python train.py``, ``python parse_test_res.py``, ``bash scripts/*.sh``) stay as they
are. This module imports nothing heavy, so ``python -m mmlop --help`` answers at once; a command's own
``--help`` costs what its module costs to import.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class Command:
    module: str
    function: str
    summary: str
    default_args: tuple[str, ...] = ()   # given when the command is called with no arguments


COMMANDS: dict[str, Command] = {
    "train": Command("train", "cli", "train or evaluate one run (= python train.py)"),
    "tables": Command("parse_test_res", "main", "average a run tree's seeds (= python parse_test_res.py)"),
    "sweep": Command("sweep.cli", "main", "whole tables: many runs on local workers or Slurm, then their tables"),
    "demo": Command("proxy.demo", "main", "offline demo and proxy benchmark: tiny CLIP, no GPU, no download"),
    "pretrain": Command("proxy.pretrain", "main", "pretrain (or find in the cache) the demo's tiny CLIP"),
    "models": Command("clip.models", "main", "the backbones MODEL.BACKBONE.NAME accepts"),
    "trainers": Command("trainers.core.methods", "main", "the trainers: what each is, its configs (list | shell ...)",
                        default_args=("list",)),
    "import-checkpoint": Command("tools.import_upstream_checkpoint", "main",
                                 "convert a CoOp/MaPLe/PromptSRC checkpoint for this code base"),
    "make-split": Command("datasets.make_split", "main", "write a dataset's split_zhou_*.json from its folders"),
}


def run(name: str, argv: Sequence[str]) -> int:
    """Call command ``name`` with ``argv``; its return value as an exit code (None counts as 0)."""
    import sys

    command = COMMANDS[name]
    sys.argv[0] = f"python -m mmlop {name}"      # argparse's prog in the command's usage line
    function = getattr(importlib.import_module(command.module), command.function)
    result = function(list(argv) or list(command.default_args))
    return result if isinstance(result, int) else 0


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m mmlop <command> [arguments]   (python -m mmlop <command> --help for its options)",
             "", "commands:"]
    lines += [f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return run(argv[0], argv[1:])
