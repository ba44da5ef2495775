"""One config value as ``train.py`` would see it: defaults, trainer nodes, a YAML file, opts.

The sweep reads ``OPTIM.MAX_EPOCH`` through ``read_value`` to name the epoch a test run loads;
``python scripts/read_cfg.py CONFIG_FILE KEY [KEY VALUE ...]`` prints any value from the shell.
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence


def read_value(config_file: str, key: str, opts: Sequence[str]):
    """The value of ``key`` (dotted, e.g. ``OPTIM.MAX_EPOCH``) after merging ``config_file`` and
    ``opts`` into the defaults with every registered trainer's node."""
    import trainers
    from dassl.config import get_cfg_default

    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    cfg.merge_from_file(config_file)
    if opts:
        cfg.merge_from_list(list(opts))
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or len(argv) % 2:
        print("usage: read_cfg.py CONFIG_FILE KEY [KEY VALUE ...]", file=sys.stderr)
        return 2
    if not os.path.isfile(argv[0]):
        print(f"error: config file {argv[0]} not found", file=sys.stderr)
        return 2
    print(read_value(argv[0], argv[1], argv[2:]))
    return 0
