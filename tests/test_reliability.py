"""Bad runs found before the work and stopped with one message: resume by default, safely (kill and
rerun, settings fingerprint, output-folder lock, leftover temporary files, Ctrl-C), failures in
log.txt, the one-line messages, --eval-only without weights, and the test script after a training
run with overrides. The data-side checks are in test_data_checks.py and test_image_modes.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import train
from dassl.engine.run_guard import OutputLock
from tests.clip_helpers import save_tiny_clip
from tests.toy_run import (  # noqa: F401  (fixtures and the toy trainer, registered on import)
    CRASH_AFTER_EPOCH,
    ToyDasslTrainer,
    base_argv,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(argv, capsys):
    rc = train.cli(argv)
    return rc, capsys.readouterr()


def weights(directory: str, epoch: int) -> dict:
    return torch.load(os.path.join(directory, "model", f"model.pth.tar-{epoch}"), weights_only=True)


# --- resume by default: in-process interruption, pruning ----------------------------------------

def test_interrupted_run_resumes_from_its_last_epoch_by_default(data_root, trainer_yaml, tmp_path, capsys):
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    assert cli(base_argv(data_root, trainer_yaml, full), capsys)[0] == 0
    CRASH_AFTER_EPOCH.append(3)          # Ctrl-C right after epoch 3 of 4 was saved
    try:
        rc, out = cli(base_argv(data_root, trainer_yaml, resumed), capsys)
    finally:
        CRASH_AFTER_EPOCH.clear()
    assert rc == 130 and "rerun the same command to resume" in out.err
    assert "Traceback" not in out.err and not os.path.exists(os.path.join(resumed, "results.json"))
    assert sorted(os.listdir(os.path.join(resumed, "model"))) == ["checkpoint", "model.pth.tar-3"]
    log = [f for f in os.listdir(resumed) if f.startswith("log.txt")]
    assert "Interrupted (Ctrl-C)" in open(os.path.join(resumed, log[0])).read()

    assert cli(base_argv(data_root, trainer_yaml, resumed), capsys)[0] == 0
    a, b = weights(full, 4), weights(resumed, 4)
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key])
    # Only the last epoch is kept by default (each epoch's checkpoint replaced the previous one).
    assert sorted(os.listdir(os.path.join(full, "model"))) == ["checkpoint", "model.pth.tar-4"]
    assert json.load(open(os.path.join(resumed, "results.json")))["accuracy"] == \
        json.load(open(os.path.join(full, "results.json")))["accuracy"]


@pytest.mark.parametrize("opts,kept", [(["TRAIN.KEEP_ALL_CHECKPOINTS", "True"], [1, 2, 3, 4]),
                                       (["TRAIN.CHECKPOINT_FREQ", "3"], [3, 4]),
                                       (["TRAIN.SAVE_EVERY_EPOCH", "False"], [4])])
def test_checkpoints_kept(data_root, trainer_yaml, tmp_path, capsys, opts, kept):
    out = str(tmp_path / "run")
    assert cli(base_argv(data_root, trainer_yaml, out, *opts), capsys)[0] == 0
    names = sorted(os.listdir(os.path.join(out, "model")))
    assert names == ["checkpoint"] + [f"model.pth.tar-{e}" for e in kept]


def test_resume_with_other_settings_is_refused_naming_the_keys(data_root, trainer_yaml, tmp_path, capsys):
    out = str(tmp_path / "run")
    CRASH_AFTER_EPOCH.append(2)
    try:
        assert cli(base_argv(data_root, trainer_yaml, out), capsys)[0] == 130
    finally:
        CRASH_AFTER_EPOCH.clear()
    rc, res = cli(base_argv(data_root, trainer_yaml, out, "OPTIM.LR", "0.5", "TRAIN.PRINT_FREQ", "3"), capsys)
    assert rc == 1
    assert "OPTIM.LR: 0.01 -> 0.5" in res.err and "another --output-dir" in res.err
    assert "PRINT_FREQ" not in res.err               # printing changes no result
    assert cli(base_argv(data_root, trainer_yaml, out, "TRAIN.PRINT_FREQ", "3"), capsys)[0] == 0


def test_leftover_temporary_files_are_removed(data_root, trainer_yaml, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    leftover = out / "model" / ".model.pth.tar-2.k3j4.tmp"
    leftover.write_bytes(b"half a checkpoint")
    rc, res = cli(base_argv(data_root, trainer_yaml, str(out)), capsys)
    assert rc == 0 and not leftover.exists()
    assert f"Removed a temporary file left by an interrupted save: {leftover}" in res.out


def test_second_run_into_a_locked_folder_stops_at_once(data_root, trainer_yaml, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with OutputLock(str(out)):
        rc, res = cli(base_argv(data_root, trainer_yaml, str(out)), capsys)
    assert rc == 1 and f"PID {os.getpid()}" in res.err and "in use" in res.err
    assert not any(f.startswith("log.txt") for f in os.listdir(out))      # it wrote nothing
    assert cli(base_argv(data_root, trainer_yaml, str(out)), capsys)[0] == 0   # released
    assert not (out / ".lock").exists()


# --- one message per failure, in the log -----------------------------------------------------------

def test_unexpected_exception_is_written_to_the_log(data_root, trainer_yaml, tmp_path, monkeypatch):
    def boom(self, batch):
        raise RuntimeError("boom in forward_backward")

    monkeypatch.setattr(ToyDasslTrainer, "forward_backward", boom)
    out = str(tmp_path / "run")
    with pytest.raises(RuntimeError, match="boom"):
        train.cli(base_argv(data_root, trainer_yaml, out))
    log = open(os.path.join(out, "log.txt")).read()
    assert "Traceback (most recent call last)" in log and "RuntimeError: boom in forward_backward" in log


def test_non_finite_loss_names_the_step_and_the_parts(data_root, trainer_yaml, tmp_path, capsys, monkeypatch):
    def nan_step(self, batch):
        loss = torch.tensor(float("nan"))
        self.detect_anomaly(loss, {"loss_ce": 2.1, "loss_kl": float("nan")})

    monkeypatch.setattr(ToyDasslTrainer, "forward_backward", nan_step)
    out = str(tmp_path / "run")
    rc, res = cli(base_argv(data_root, trainer_yaml, out), capsys)
    assert rc == 1 and res.err.count("\n") == 1 and "Traceback" not in res.err
    assert "loss_kl = nan" in res.err and "loss_ce" not in res.err
    assert "epoch 1, batch 1" in res.err and "OPTIM.LR" in res.err and "PREC" in res.err
    log = open(os.path.join(out, "log.txt")).read()
    assert "error: Loss is infinite or NaN!" in log and "Traceback" not in log
    monkeypatch.setenv("MMLOP_DEBUG", "1")                 # the debug switch shows the traceback
    with pytest.raises(FloatingPointError):
        train.cli(base_argv(data_root, trainer_yaml, str(tmp_path / "debug")))


def test_output_dir_that_cannot_be_created(data_root, trainer_yaml, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    rc, res = cli(base_argv(data_root, trainer_yaml, str(a_file / "run")), capsys)
    assert rc == 1 and res.err.startswith(f"error: Cannot use the output directory {a_file / 'run'}")
    assert "--output-dir" in res.err and "Traceback" not in res.err


def test_eval_only_messages(data_root, trainer_yaml, tmp_path, capsys):
    trained = str(tmp_path / "trained")
    assert cli(base_argv(data_root, trainer_yaml, trained), capsys)[0] == 0
    ev = str(tmp_path / "eval")
    rc, res = cli(base_argv(data_root, trainer_yaml, ev, "--eval-only"), capsys)
    assert rc == 1 and "--eval-only without --model-dir" in res.err and "--eval-untrained" in res.err
    assert not os.path.exists(os.path.join(ev, "results.json"))   # refused before evaluating
    rc, res = cli(base_argv(data_root, trainer_yaml, ev, "--eval-only", "--model-dir", trained,
                            "--load-epoch", "30"), capsys)
    assert rc == 1 and "model.pth.tar-30" in res.err and "--load-epoch 4" in res.err
    rc, res = cli(base_argv(data_root, trainer_yaml, ev, "--eval-only", "--model-dir", trained + "_typo",
                            "--load-epoch", "4"), capsys)
    assert rc == 1 and "does not exist" in res.err and "Traceback" not in res.err
    rc, _ = cli(base_argv(data_root, trainer_yaml, str(tmp_path / "untrained"), "--eval-only",
                          "--eval-untrained"), capsys)
    assert rc == 0


def test_config_dump_goes_to_the_log_only(data_root, trainer_yaml, tmp_path, capsys):
    out = str(tmp_path / "run")
    rc, res = cli(base_argv(data_root, trainer_yaml, out, "OPTIM.MAX_EPOCH", "1"), capsys)
    assert rc == 0 and "** Config **" not in res.out
    assert f"Arguments and config: in {os.path.join(out, 'log.txt')}" in res.out
    assert "** Config **" in open(os.path.join(out, "log.txt")).read()


# --- a real run killed with SIGKILL, and the test script after overrides -------------------------

@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    ckpt = save_tiny_clip(root / "tiny_clip.pt")
    env = dict(os.environ, DATA=str(root / "data"), OUTPUT=str(root / "output"), SHOTS="1",
               PYTHON=sys.executable)
    shape = ["MODEL.BACKBONE.NAME", str(ckpt), "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
             "TRAINER.MMLOP.PROMPT_DEPTH", "2", "DATALOADER.TEST.BATCH_SIZE", "250"]
    return {"root": root, "env": env, "shape": shape}


def _train_py(tiny_env, out, *opts):
    return [sys.executable, "train.py", "--root", tiny_env["env"]["DATA"], "--seed", "1", "--trainer", "MMLoP",
            "--dataset-config-file", "configs/datasets/synthetic_clean.yaml",
            "--config-file", "configs/trainers/MMLoP/tiny_4+4ctx_ep10.yaml", "--output-dir", str(out),
            *tiny_env["shape"], "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "4",
            "DATASET.SUBSAMPLE_CLASSES", "base", *opts]


@pytest.mark.slow
def test_sigkill_during_training_then_rerun_equals_an_uninterrupted_run(tiny_env):
    full, killed = tiny_env["root"] / "full", tiny_env["root"] / "killed"
    r = subprocess.run(_train_py(tiny_env, full), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    proc = subprocess.Popen(_train_py(tiny_env, killed), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    pointer = killed / "prompt_learner" / "checkpoint"
    deadline = time.time() + 300
    while time.time() < deadline and not (pointer.exists() and "tar-2" in pointer.read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "results.json").exists()
    r = subprocess.run(_train_py(tiny_env, killed), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    log = sorted(f for f in os.listdir(killed) if f.startswith("log.txt"))[-1]
    assert "will resume training" in open(killed / log).read()
    a = torch.load(full / "prompt_learner" / "model.pth.tar-4", weights_only=True)["state_dict"]
    b = torch.load(killed / "prompt_learner" / "model.pth.tar-4", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.load(open(full / "results.json"))["accuracy"] == json.load(open(killed / "results.json"))["accuracy"]


@pytest.mark.slow
def test_test_script_reads_the_last_epoch_from_the_training_run(tiny_env):
    def script(name, *opts):
        return subprocess.run(["bash", f"scripts/{name}", "synthetic_clean", "1", *opts], cwd=REPO,
                              env=tiny_env["env"], capture_output=True, text=True, timeout=600)

    r = script("base2new_test.sh", *tiny_env["shape"])
    assert r.returncode == 2 and "no training run at" in r.stderr
    assert "run scripts/base2new_train.sh synthetic_clean 1 first" in r.stderr
    r = script("base2new_train.sh", *tiny_env["shape"], "OPTIM.MAX_EPOCH", "2")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = script("base2new_test.sh", *tiny_env["shape"])          # no OPTIM.MAX_EPOCH: read from the run
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    tail = os.path.join("synthetic_clean", "shots_1", "MMLoP", "vit_b16_c2_ep30_batch4_4+4ctx", "seed1")
    results = json.load(open(os.path.join(tiny_env["env"]["OUTPUT"], "base2new", "test_new", tail,
                                          "results.json")))
    assert results["epoch"] == 2 and results["subsample_classes"] == "new"
