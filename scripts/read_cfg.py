"""Print one config value as train.py would see it: defaults, trainer nodes, a YAML file, opts.

    python scripts/read_cfg.py configs/trainers/MMLoP/x.yaml OPTIM.MAX_EPOCH [KEY VALUE ...]

The logic is ``trainers.core.config_value`` (the sweep reads the epochs it loads through it).
"""
import sys

from trainers.core.config_value import main

if __name__ == "__main__":
    sys.exit(main())
