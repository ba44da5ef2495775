"""A real train.py killed (SIGKILL) at every write and every rename of a run, then rerun with the same
command, ends exactly as an uninterrupted run: every tensor of the final checkpoint, the best model
and the accuracy. PromptSRC with GPA and ``TEST.FINAL_MODEL best_val`` (the GPA state and the
best-so-far value must survive), and MMLoP with GPA.

The kill comes from the fault hook of ``dassl.utils.tools.atomic_write`` (``MMLOP_FAULT_AT=N``:
SIGKILL at the N-th write/rename point). To keep ~30 runs per trainer affordable, one driver
process imports train.py once (no tensor work) and forks a child per run; each child is a whole
``train.py`` run that the kernel kills."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.clip_helpers import save_tiny_clip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ["DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "2", "DATASET.SUBSAMPLE_CLASSES", "base",
          "DATALOADER.TRAIN_X.BATCH_SIZE", "8", "DATALOADER.TEST.BATCH_SIZE", "500",
          "OPTIM.WARMUP_EPOCH", "-1", "OPTIM.LR", "0.5"]
# flags, then the opts that follow the common ones
CASES = {
    "PromptSRC-GPA-best_val": [["--trainer", "PromptSRC", "--config-file",
                                "configs/trainers/PromptSRC/tiny_4+4ctx_ep10.yaml"],
                               ["TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "2",
                                "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "2", "TRAINER.PROMPTSRC.GPA_MEAN", "1.5",
                                "TEST.FINAL_MODEL", "best_val"]],
    "MMLoP-GPA": [["--trainer", "MMLoP", "--config-file", "configs/trainers/MMLoP/tiny_4+4ctx_ep10.yaml"],
                  ["TRAINER.MMLOP.PROMPT_DEPTH", "2", "TRAINER.MMLOP.GPA", "True", "TRAINER.MMLOP.GPA_MEAN", "1.5"]],
}

# Runs in a separate interpreter: `runs` is a JSON list of [output_dir, fault_at or 0]; for each,
# a forked child runs train.cli and the exit status (negative: killed by that signal) is printed.
DRIVER = r"""
import json, os, sys
sys.path.insert(0, os.getcwd())
import train
base, runs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
codes = []
for out, fault_at in runs:
    pid = os.fork()
    if pid == 0:
        os.environ["MMLOP_FAULT_AT"] = str(fault_at)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1); os.dup2(devnull, 2)
        sys.stdout = open(1, "w", closefd=False); sys.stderr = open(2, "w", closefd=False)
        try:
            code = train.cli(["--output-dir", out] + base)
        except BaseException:
            code = 99
        sys.stdout.flush()
        os._exit(code)
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print(json.dumps(codes))
"""


@pytest.fixture(scope="module")
def fault_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    backbone = save_tiny_clip(root / "tiny_clip.pt")
    env = dict(os.environ, MMLOP_CPUS="1")
    env.pop("MMLOP_FAULT_AT", None)
    base = ["--root", str(root / "data"), "--seed", "1", "--dataset-config-file",
            "configs/datasets/synthetic_src.yaml"]
    return root, env, base, ["MODEL.BACKBONE.NAME", str(backbone), *COMMON]


def drive(env, argv, runs) -> list[int]:
    r = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argv), json.dumps(runs)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def fault_points(env, argv, out, log) -> list[str]:
    """The write/rename points of one uninterrupted run (its data caches already built)."""
    assert drive(dict(env, MMLOP_FAULT_LOG=str(log)), argv, [[str(out), 0]]) == [0]
    return [line.split(" ", 1)[1] for line in log.read_text().splitlines()]


def tensors(path) -> dict:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in checkpoint["state_dict"].items()}


def assert_same_run(a, b, what: str) -> None:
    for name in ("model.pth.tar-2", "model-best.pth.tar"):
        pa, pb = a / "prompt_learner" / name, b / "prompt_learner" / name
        assert pa.exists() == pb.exists(), f"{what}: {name}"
        if pa.exists():
            ta, tb = tensors(pa), tensors(pb)
            assert ta.keys() == tb.keys(), f"{what}: {name}"
            for key in ta:
                assert torch.equal(ta[key], tb[key]), f"{what}: {name} {key}"
            assert torch.load(pa, weights_only=True)["epoch"] == torch.load(pb, weights_only=True)["epoch"], what
    ra, rb = json.load(open(a / "results.json")), json.load(open(b / "results.json"))
    assert (ra["accuracy"], ra["epoch"]) == (rb["accuracy"], rb["epoch"]), what


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_sigkill_at_every_write_and_rename_then_rerun_equals_an_uninterrupted_run(fault_env, case):
    root, env, base, opts = fault_env
    flags, case_opts = CASES[case]
    argv = base + flags + opts + case_opts
    work = root / case
    work.mkdir()
    assert drive(env, argv, [[str(work / "warm-up"), 0]]) == [0]   # builds the data caches: not the run's writes
    points = fault_points(env, argv, work / "full", work / "points.log")
    full = work / "full"
    run_points = [p for p in points if p.split(" ", 1)[1].startswith(str(full))]
    assert len(run_points) == len(points)
    names = {os.path.basename(p.split(" ", 1)[1]) for p in points}
    assert {"config.yaml", "checkpoint", "model.pth.tar-1", "model.pth.tar-2", "results.json"} <= names
    if "best_val" in case:
        assert "model-best.pth.tar" in names
        # epoch 2 validates worse: a best-so-far lost on resume would let it replace model-best
        assert torch.load(full / "prompt_learner" / "model-best.pth.tar", weights_only=True)["epoch"] == 1

    killed = [[str(work / f"kill{n}"), n] for n in range(1, len(points) + 1)]
    assert drive(env, argv, killed) == [-9] * len(points)
    reruns = [[out, 0] for out, _ in killed]
    assert drive(env, argv, reruns) == [0] * len(points)
    for (out, n), point in zip(killed, points):
        assert_same_run(full, work / os.path.basename(out), f"killed at {point} (point {n})")
