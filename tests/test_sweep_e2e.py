"""scripts/sweep.py end to end with train.py on the synthetic datasets and a tiny random CLIP:
a base-to-novel sweep of 2 trainers x 2 datasets x 2 seeds through submitit's LocalExecutor (jobs
as separate processes), its tree against the bash scripts' tree, the dependency order, a driver
and a job killed mid-sweep then rerun, and a failing job. Every train.py call goes through a
PYTHON wrapper that logs it, so the tests count them."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import parse_test_res
from sweep import cli, tables
from tests.clip_helpers import save_tiny_clip

pytest.importorskip("submitit")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = "vit_b16_c2_ep30_batch4_4+4ctx"
DATASETS = ("synthetic_clean", "synthetic_fog")
SEEDS = ("1", "2")
pytestmark = pytest.mark.slow


def _wrapper(path, log):
    """A PYTHON that logs ``<time> <pid> <args>`` and becomes python (same PID: exec)."""
    path.write_text(f'#!/bin/bash\necho "$(date +%s.%N) $$ $*" >> {log}\nexec {sys.executable} "$@"\n')
    path.chmod(0o755)
    return str(path)


def _train_calls(log):
    if not os.path.isfile(log):
        return []
    out = []
    for line in open(log):
        t, pid, *args = line.split()
        if args and args[0] == "train.py":
            out.append((float(t), int(pid), args[1:]))
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    ckpt = save_tiny_clip(root / "tiny_clip.pt")
    from datasets.synthetic import SyntheticShapes, SyntheticShapesFog, ensure_generated

    for cls in (SyntheticShapes, SyntheticShapesFog):           # once, before jobs run concurrently
        ensure_generated(str(root / "data"), cls.dataset_dir, cls.style, cls.split_file)
    opts = ["MODEL.BACKBONE.NAME", str(ckpt), "INPUT.SIZE", "(32, 32)", "OPTIM.MAX_EPOCH", "1",
            "DATALOADER.NUM_WORKERS", "0", "TRAINER.MMLOP.PROMPT_DEPTH", "2", "DATALOADER.TEST.BATCH_SIZE", "250"]
    return {"root": root, "data": str(root / "data"), "opts": opts}


def _sweep_args(env, output, *extra, datasets=DATASETS, seeds=SEEDS, trainers=("ZeroshotCLIP", "MMLoP")):
    return ["--protocol", "base2new", "--trainers", *trainers, "--datasets", *datasets, "--seeds", *seeds,
            "--shots", "1", "--data", env["data"], "--output", output, "--name", "b2n", *extra, "--", *env["opts"]]


def _run_cli(argv):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli.main(argv)
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def sweep_a(env):
    """The uninterrupted sweep: 16 jobs through submitit's LocalExecutor, 2 at a time."""
    out = str(env["root"] / "A")
    log = str(env["root"] / "calls_A.log")
    python = _wrapper(env["root"] / "python_A", log)
    t0 = time.time()
    code, text = _run_cli(_sweep_args(env, out, "--backend", "submitit-local", "--workers", "2", "--python", python))
    return {"out": out, "log": log, "code": code, "text": text, "seconds": time.time() - t0}


def _cell_means(root):
    """Every number of every table of a tree (rounded as printed)."""
    found = {}
    for t in tables.build_tables(tables.Tree(root)):
        for row in t.rows:
            for col, v in row["cells"]["ours"].items():
                value = v.mean if isinstance(v, tables.Cell) else v
                found[(t.title, row["name"], col)] = None if value is None else round(value, 6)
    return found


def test_submitit_sweep_completes_in_dependency_order(sweep_a):
    assert sweep_a["code"] == 0, sweep_a["text"][-3000:]
    assert "16/16 done" in sweep_a["text"] and "Complete: every job has its results.json." in sweep_a["text"]
    out = sweep_a["out"]
    calls = _train_calls(sweep_a["log"])
    dirs = [args[args.index("--output-dir") + 1] for _, _, args in calls]
    assert len(calls) == 16 and len(set(dirs)) == 16                     # every job once
    for t, _, args in calls:
        if "--model-dir" in args:                                          # a test job of MMLoP
            model_results = os.path.join(args[args.index("--model-dir") + 1], "results.json")
            assert os.path.getmtime(model_results) <= t, "a test started before its training's results.json"
    # Every job ran as its own submitit job, with its log folder.
    sdir = os.path.join(out, ".sweep", "b2n")
    job_folders = [d for d in os.listdir(os.path.join(sdir, "submitit")) if d.isdigit()]
    assert len(job_folders) == 16
    assert all(os.path.isfile(os.path.join(sdir, "submitit", d, f"{d}_0_log.out")) for d in job_folders)
    # The table printed at the end: its numbers are parse_test_res.py's over the same folders.
    data = json.load(open(os.path.join(sdir, "tables", "tables.json")))
    assert {t["method"]["trainer"] for t in data} == {"ZeroshotCLIP", "MMLoP"}
    for t in data:
        folder = CFG if t["method"]["trainer"] == "MMLoP" else "vit_b16"
        for row in t["rows"]:
            if row["kind"] != "dataset":
                continue
            for col, split in (("Base", "train_base"), ("Novel", "test_new")):
                path = os.path.join(out, "base2new", split, row["name"], "shots_1", t["method"]["trainer"], folder)
                with contextlib.redirect_stdout(io.StringIO()):
                    expected = parse_test_res.parse_function(path, test_log=True)["accuracy"]
                assert row["cells"]["ours"][col]["mean"] == expected
                assert row["cells"]["ours"][col]["n"] == 2
    assert "### Base-to-novel: MMLoP/vit_b16_c2_ep30_batch4_4+4ctx, 1 shot" in sweep_a["text"]


def _files(root):
    out = set()
    for d, subdirs, files in os.walk(root):
        subdirs[:] = [s for s in subdirs if not s.startswith(".") and s != "tensorboard"]
        out.update(os.path.relpath(os.path.join(d, f), root) for f in files if not f.startswith("."))
    return out


def test_the_tree_equals_the_scripts_tree_and_each_skips_the_others_runs(env, sweep_a):
    scripts_out = str(env["root"] / "S")
    e = dict(os.environ, DATA=env["data"], OUTPUT=scripts_out, SHOTS="1", PYTHON=sys.executable)
    runs = [("MMLoP", "synthetic_clean", "1"), ("ZeroshotCLIP", "synthetic_fog", "2")]
    for trainer, dataset, seed in runs:
        for script in ("base2new_train.sh", "base2new_test.sh"):
            r = subprocess.run(["bash", f"scripts/{script}", dataset, seed, *env["opts"]], cwd=REPO,
                               env=dict(e, TRAINER=trainer), capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    a, s = sweep_a["out"], scripts_out
    for trainer, dataset, seed in runs:
        folder = CFG if trainer == "MMLoP" else "vit_b16"
        for split in ("train_base", "test_new"):
            rel = f"base2new/{split}/{dataset}/shots_1/{trainer}/{folder}/seed{seed}"
            assert _files(os.path.join(a, rel)) == _files(os.path.join(s, rel)), rel
            ours, theirs = (json.load(open(os.path.join(root, rel, "results.json"))) for root in (a, s))
            assert ours.keys() == theirs.keys()
            for key in ours:
                if key in ("output_dir", "command"):           # the same, but for the output root
                    assert ours[key] == theirs[key].replace(s, a), key
                elif key in ("git_commit", "git_dirty"):       # the checkout at run time (may move between runs)
                    continue
                else:
                    assert ours[key] == theirs[key], key
    # The scripts skip a run the sweep finished ...
    r = subprocess.run(["bash", "scripts/base2new_test.sh", "synthetic_fog", "2", *env["opts"]], cwd=REPO,
                       env=dict(e, OUTPUT=a, TRAINER="ZeroshotCLIP"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "Oops! The results exist at" in r.stdout
    # ... and a sweep skips the runs the scripts finished (no train.py call).
    log = str(env["root"] / "calls_S.log")
    code, text = _run_cli(_sweep_args(env, s, "--python", _wrapper(env["root"] / "python_S", log),
                                      datasets=("synthetic_clean",), seeds=("1",), trainers=("MMLoP",)))
    assert code == 0 and "2/2 done" in text and _train_calls(log) == []


def test_kill_the_driver_and_a_job_then_rerun_completes_only_what_is_missing(env, sweep_a):
    b = str(env["root"] / "B")
    shutil.copytree(sweep_a["out"], b, ignore=shutil.ignore_patterns(".sweep"))
    missing = [f"base2new/train_base/synthetic_fog/shots_1/MMLoP/{CFG}/seed2",
               f"base2new/test_new/synthetic_fog/shots_1/MMLoP/{CFG}/seed2",
               "base2new/test_new/synthetic_clean/shots_1/ZeroshotCLIP/vit_b16/seed1"]
    for rel in missing:
        shutil.rmtree(os.path.join(b, rel))
    log = str(env["root"] / "calls_B.log")
    python = _wrapper(env["root"] / "python_B", log)
    cmd = [sys.executable, "scripts/sweep.py", *_sweep_args(env, b, "--workers", "2", "--python", python)]
    driver = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.time() + 120
        while len(_train_calls(log)) < 2 and time.time() < deadline:      # the MMLoP training and the ZS test
            time.sleep(0.1)
        calls = _train_calls(log)
        assert len(calls) == 2, calls
        victim = next(pid for _, pid, args in calls if "train_base" in args[args.index("--output-dir") + 1])
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        os.kill(victim, signal.SIGKILL)                  # the training dies mid-run, the ZS test lives on
    finally:
        if driver.poll() is None:
            driver.kill()
    assert not os.path.isfile(os.path.join(b, missing[0], "results.json"))
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "3/3 done" not in r.stdout and "16/16 done" in r.stdout
    calls = _train_calls(log)
    dirs = [args[args.index("--output-dir") + 1] for _, _, args in calls]
    # 3 missing jobs + the killed one started again; the surviving job was waited for, not rerun.
    assert len(calls) == 4, dirs
    assert sorted(dirs) == sorted([os.path.join(b, missing[0])] * 2 + [os.path.join(b, m) for m in missing[1:]])
    assert _cell_means(b) == _cell_means(sweep_a["out"])


def test_a_failing_job_is_reported_and_does_not_stop_the_others(env, sweep_a):
    c = str(env["root"] / "C")
    shutil.copytree(sweep_a["out"], c, ignore=shutil.ignore_patterns(".sweep"))
    rerun = "base2new/test_new/synthetic_clean/shots_1/ZeroshotCLIP/vit_b16/seed1"
    shutil.rmtree(os.path.join(c, rerun))
    log = str(env["root"] / "calls_C.log")
    code, text = _run_cli(_sweep_args(env, c, "--workers", "2", "--python", _wrapper(env["root"] / "python_C", log),
                                      "--no-tables", datasets=("synthetic_clean", "dtd"), seeds=("1",)))
    assert code == 1, text                                   # incomplete
    assert os.path.isfile(os.path.join(c, rerun, "results.json"))      # the others ran
    assert "Failed (3):" in text and "Incomplete: rerun the same command" in text
    sdir = os.path.join(c, ".sweep", "b2n")
    train_log = os.path.join(sdir, "logs", f"base2new__train_base__dtd__shots_1__MMLoP__{CFG}__seed1.log")
    assert f"log: {train_log}" in text and os.path.isfile(train_log)
    assert "| " in text.split(train_log, 1)[1]               # the last lines of its error follow
    assert "Blocked (a dependency did not finish) (1):" in text
    assert f"base2new/test_new/dtd/shots_1/MMLoP/{CFG}/seed1: its dependency" in text
    assert len(_train_calls(log)) == 4                       # 3 failures + the missing ZS test
    code, text = _run_cli(["--status", "--output", c, "--name", "b2n"])
    assert code == 1 and "Failed (3):" in text and f"log: {train_log}" in text
