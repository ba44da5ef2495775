"""Run, follow, resume and tabulate whole benchmark tables (see ``sweep/cli.py`` and README, "Sweeps").

    python scripts/sweep.py --protocol base2new --trainers MMLoP --gpus 0,1,2,3
    python scripts/sweep.py --help
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sweep.cli import main  # noqa: E402

if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:            # e.g. piped into head
        sys.stderr.close()
        sys.exit(1)
