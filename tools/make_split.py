"""Generate a dataset's split_zhou_<Dataset>.json explicitly (see DATASETS.md#generating-a-split).

Usage (from the repository root): python tools/make_split.py --root DATA --dataset OxfordPets [--seed 1]
"""
import datasets  # noqa: F401  (registers the loaders)
from datasets.make_split import main

if __name__ == "__main__":
    main()
