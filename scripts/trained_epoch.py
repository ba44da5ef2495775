"""Print the last epoch of a finished training run, read from the run itself.

    python scripts/trained_epoch.py MODEL_DIR "COMMAND THAT TRAINS IT"

The test scripts load that epoch (``--load-epoch``), so they work after a training run with any
overrides (``OPTIM.MAX_EPOCH`` included). The epoch comes from the run's ``results.json``, or,
for a run trained without a final test, from its checkpoint pointer when it reached the
``OPTIM.MAX_EPOCH`` of its saved ``config.yaml``. A missing or unfinished run is one error line
(exit code 2) naming the command to run.
"""
from __future__ import annotations

import os
import re
import sys

from mmlop.results import read_results


def pointer_epoch(model_dir: str) -> int | None:
    """Epoch of the newest ``<model>/checkpoint`` pointer under ``model_dir`` (None: none)."""
    epochs = []
    for name in sorted(os.listdir(model_dir)):
        pointer = os.path.join(model_dir, name, "checkpoint")
        if os.path.isfile(pointer):
            match = re.search(r"model\.pth\.tar-(\d+)$", open(pointer).read().strip())
            if match:
                epochs.append(int(match.group(1)))
    return min(epochs) if epochs else None


def max_epoch(model_dir: str) -> int | None:
    """``OPTIM.MAX_EPOCH`` of the run's saved ``config.yaml`` (None: not recorded)."""
    path = os.path.join(model_dir, "config.yaml")
    if not os.path.isfile(path):
        return None
    import yaml

    with open(path) as f:
        return int(yaml.safe_load(f)["OPTIM"]["MAX_EPOCH"])


def trained_epoch(model_dir: str, hint: str) -> int:
    """The last epoch of the finished run in ``model_dir``; ``SystemExit`` with the message otherwise."""
    if not os.path.isdir(model_dir):
        raise SystemExit(f"error: no training run at {model_dir}; run {hint} first")
    epoch = (read_results(model_dir) or {}).get("epoch")
    if epoch:
        return int(epoch)
    last, total = pointer_epoch(model_dir), max_epoch(model_dir)
    if last is not None and total is not None and last >= total:
        return last
    done = f"last checkpoint: epoch {last} of {total or '?'}" if last else "no checkpoint yet"
    raise SystemExit(f"error: the training run at {model_dir} is unfinished ({done}); rerun {hint} to "
                     "finish it (it resumes from its last checkpoint)")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: trained_epoch.py MODEL_DIR 'COMMAND THAT TRAINS IT'", file=sys.stderr)
        return 2
    try:
        print(trained_epoch(*argv))
    except SystemExit as exc:
        print(exc.code, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
