"""Print one config value as train.py would see it: defaults, trainer nodes, a YAML file, opts.

    python scripts/read_cfg.py configs/trainers/MMLoP/x.yaml OPTIM.MAX_EPOCH [KEY VALUE ...]

Used by the run scripts to load the last epoch of a training run (``--load-epoch``).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_value(config_file: str, key: str, opts: list[str]):
    """The value of ``key`` after merging ``config_file`` and ``opts`` into the defaults."""
    import trainers
    from dassl.config import get_cfg_default

    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    cfg.merge_from_file(config_file)
    if opts:
        cfg.merge_from_list(opts)
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def main(argv: list[str]) -> int:
    if len(argv) < 2 or len(argv) % 2:
        print("usage: read_cfg.py CONFIG_FILE KEY [KEY VALUE ...]", file=sys.stderr)
        return 2
    if not os.path.isfile(argv[0]):
        print(f"error: config file {argv[0]} not found", file=sys.stderr)
        return 2
    print(read_value(argv[0], argv[1], argv[2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
