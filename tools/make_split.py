"""Generate a dataset's split_zhou_<Dataset>.json explicitly (see DATASETS.md#generating-a-split).

Usage: python tools/make_split.py --root DATA --dataset OxfordPets [--seed 1]

The thin command line of ``datasets/make_split.py`` (the generators), which is also
``python -m mmlop make-split``.
"""
from datasets.make_split import main

if __name__ == "__main__":
    main()
