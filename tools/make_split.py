"""Generate a dataset's split_zhou_<Dataset>.json explicitly (see DATASETS.md#generating-a-split).

Usage (from the repository root): python tools/make_split.py --root DATA --dataset OxfordPets [--seed 1]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import datasets  # noqa: E402,F401  (registers the loaders)
from datasets.make_split import main  # noqa: E402

if __name__ == "__main__":
    main()
