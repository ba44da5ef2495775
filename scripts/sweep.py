"""Run, follow, resume and tabulate whole benchmark tables (see ``sweep/cli.py`` and README, "Sweeps").

    python scripts/sweep.py --protocol base2new --trainers MMLoP --gpus 0,1,2,3
    python scripts/sweep.py --help

This file is named like the ``sweep`` package, and Python puts its folder first on the import
path, so it cannot import the package: it becomes ``python -m sweep.cli`` (the same process, same
arguments), which finds the package in the current directory (the repository root) or, from
anywhere else, through ``pip install -e .``.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "sweep.cli", *sys.argv[1:]])
