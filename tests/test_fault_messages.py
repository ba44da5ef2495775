"""Broken run folders and refused reruns: one message each (first line pinned, no traceback), and
nothing on disk changed by a refusal. Resume takes the newest *usable* checkpoint and says which
newer one it skipped and why; files that are only corrupt are never diagnosed as needing trust."""
from __future__ import annotations

import hashlib
import os
import random

import pytest
import torch

import train
from tests.toy_run import base_argv  # noqa: F401  (registers the toy trainer and dataset)

KEEP_ALL = ("TRAIN.KEEP_ALL_CHECKPOINTS", "True")


def cli(argv, capsys):
    rc = train.cli(argv)
    return rc, capsys.readouterr()


def snapshot(directory) -> dict[str, str]:
    """Every file below ``directory`` with the digest of its bytes."""
    found = {}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, directory)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


@pytest.fixture
def finished(data_root, trainer_yaml, tmp_path, capsys):
    """A finished toy run (4 epochs, every epoch kept) and the argv that made it."""
    out = str(tmp_path / "run")
    argv = base_argv(data_root, trainer_yaml, out, *KEEP_ALL)
    assert cli(argv, capsys)[0] == 0
    return out, argv


def interrupted(out: str) -> None:
    """Make ``out`` look interrupted after epoch 4 was saved: no results.json, so a rerun resumes."""
    os.remove(os.path.join(out, "results.json"))


def ckpt(out, epoch) -> str:
    return os.path.join(out, "model", f"model.pth.tar-{epoch}")


@pytest.mark.parametrize("damage,cause", [
    ("delete", "names model.pth.tar-4, which does not exist"),
    ("truncate", "it is truncated"),
    ("zero", "it is empty (0 bytes"),
    ("random", "it is corrupt (not a checkpoint written by torch.save)"),
])
def test_damaged_newest_checkpoint_is_named_and_the_previous_epoch_resumes(finished, capsys, damage, cause):
    out, argv = finished
    path = ckpt(out, 4)
    if damage == "delete":
        os.remove(path)
    elif damage == "truncate":
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    elif damage == "zero":
        open(path, "wb").close()
    else:
        open(path, "wb").write(random.Random(1).randbytes(3000))
    os.remove(os.path.join(out, "results.json"))
    rc, res = cli(argv, capsys)
    assert rc == 0 and "Traceback" not in res.err
    skipped = [line for line in res.out.splitlines() if line.startswith("Skipped: ")]
    assert len(skipped) == 1 and cause in skipped[0]
    assert "DASSL_TRUSTED" not in res.out and "Resuming from epoch 3, the newest usable checkpoint" in res.out
    assert "Previous epoch: 3" in res.out and os.path.isfile(os.path.join(out, "results.json"))
    assert torch.load(path, weights_only=True)["epoch"] == 4          # epoch 4 trained again


@pytest.mark.parametrize("damage,first", [
    ("delete", "error: No usable checkpoint to resume in {out}: the pointer \"{out}/model/checkpoint\" "
               "names model.pth.tar-4, which does not exist"),
    ("zero", "error: No usable checkpoint to resume in {out}: Checkpoint \"{out}/model/model.pth.tar-4\" "
             "cannot be read: it is empty (0 bytes"),
    ("random", "error: No usable checkpoint to resume in {out}: Checkpoint \"{out}/model/model.pth.tar-4\" "
               "cannot be read: it is corrupt"),
])
def test_no_usable_checkpoint_is_one_message_and_nothing_changes(data_root, trainer_yaml, tmp_path, capsys,
                                                                 damage, first):
    out = str(tmp_path / "run")
    argv = base_argv(data_root, trainer_yaml, out)
    assert cli(argv, capsys)[0] == 0
    interrupted(out)
    path = ckpt(out, 4)
    if damage == "delete":
        os.remove(path)
    elif damage == "zero":
        open(path, "wb").close()
    else:
        open(path, "wb").write(random.Random(1).randbytes(3000))
    before = snapshot(out)
    rc, res = cli(argv, capsys)
    assert rc == 1 and "Traceback" not in res.err
    assert res.err.splitlines()[0].startswith(first.format(out=out))
    assert "DASSL_TRUSTED" not in res.err and "another --output-dir" in res.err
    assert snapshot(out) == before


def test_empty_pointer_is_named_and_the_newest_file_resumes(finished, capsys):
    out, argv = finished
    interrupted(out)
    open(os.path.join(out, "model", "checkpoint"), "w").close()
    rc, res = cli(argv, capsys)
    assert rc == 0
    assert f'Skipped: the pointer "{out}/model/checkpoint" is empty' in res.out and "Previous epoch: 4" in res.out


def test_checkpoint_of_other_shapes_is_one_message(finished, capsys):
    out, argv = finished
    interrupted(out)
    checkpoint = torch.load(ckpt(out, 4), weights_only=True)
    checkpoint["state_dict"]["fc1.weight"] = torch.zeros(5, 192)
    torch.save(checkpoint, ckpt(out, 4))
    before = snapshot(out)
    rc, res = cli(argv, capsys)
    assert rc == 1 and "Traceback" not in res.err
    assert res.err.splitlines()[0].startswith(
        f'error: Checkpoint "{ckpt(out, 4)}" holds weights of other shapes than this model '
        "(fc1.weight: [5, 192] in the file, [16, 192] here)")
    after = snapshot(out)
    assert {k: after[k] for k in before} == before and all(k.startswith("log.txt") for k in set(after) - set(before))


def test_refused_rerun_changes_nothing_on_disk(finished, capsys):
    out, argv = finished
    interrupted(out)
    before = snapshot(out)
    rc, res = cli(argv + ["OPTIM.LR", "0.5"], capsys)
    assert rc == 1 and res.err.startswith(f"error: {ckpt(out, 4)} was written by a run with other settings "
                                          "(code version ")
    assert "OPTIM.LR: 0.01 -> 0.5" in res.err
    assert snapshot(out) == before                      # config.yaml, logs and checkpoints as they were


def _drop_setting(path: str, key: str) -> None:
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["run_settings"][key]
    del checkpoint["code_version"]
    torch.save(checkpoint, path)


def test_key_added_since_the_checkpoint_is_accepted_at_its_default(finished, capsys):
    out, argv = finished
    interrupted(out)
    _drop_setting(ckpt(out, 4), "OPTIM.SGD_NESTEROV")      # as if written before the key existed
    rc, res = cli(argv, capsys)
    assert rc == 0
    assert (f"Note: {ckpt(out, 4)} was written by a version that did not record itself, before the keys "
            "OPTIM.SGD_NESTEROV existed; this run has their defaults, so it continues that run") in res.out


def test_key_added_since_but_set_to_another_value_is_refused(finished, capsys):
    out, argv = finished
    interrupted(out)
    _drop_setting(ckpt(out, 4), "OPTIM.SGD_NESTEROV")
    before = snapshot(out)
    rc, res = cli(argv + ["OPTIM.SGD_NESTEROV", "True"], capsys)
    assert rc == 1 and "OPTIM.SGD_NESTEROV: (absent) -> True" in res.err
    assert "version that did not record itself" in res.err.splitlines()[0]
    assert snapshot(out) == before


def test_code_version_is_recorded_in_checkpoints(finished):
    out, _ = finished
    from dassl.engine.results import code_version

    assert torch.load(ckpt(out, 4), weights_only=True)["code_version"] == code_version()


def test_eval_only_into_a_training_folder_is_refused_unless_overwrite(finished, data_root, trainer_yaml, capsys):
    out, _argv = finished
    before = snapshot(out)
    ev = base_argv(data_root, trainer_yaml, out, "--eval-only", "--model-dir", out, "--load-epoch", "4")
    rc, res = cli(ev, capsys)
    assert rc == 1 and res.err.splitlines()[0] == (
        f"error: --output-dir {out} holds the checkpoints of a training run: evaluating into it would replace "
        "its results.json and config.yaml. Choose another --output-dir, or add --overwrite to replace them")
    assert snapshot(out) == before
    assert cli(["--overwrite", *ev], capsys)[0] == 0


class _Shell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_even_when_trusted(tmp_path, monkeypatch):
    from dassl.utils import LegacyCheckpointError, load_checkpoint

    marker, path = tmp_path / "code_was_run", str(tmp_path / "model.pth.tar-1")
    torch.save({"state_dict": {}, "epoch": 1, "scheduler": _Shell(str(marker))}, path)
    monkeypatch.setenv("DASSL_TRUSTED_CHECKPOINTS", "1")
    for trusted in (None, True):
        with pytest.raises(LegacyCheckpointError) as info:
            load_checkpoint(path, trusted=trusted)
        assert str(info.value).startswith(f'Checkpoint "{path}" names posix.system, which runs code')
    assert not marker.exists()


def test_random_bytes_stay_corrupt_when_trusted(tmp_path, monkeypatch):
    from dassl.utils.torchtools import CheckpointReadError, load_checkpoint

    path = tmp_path / "model.pth.tar-1"
    path.write_bytes(random.Random(2).randbytes(3000))
    monkeypatch.setenv("DASSL_TRUSTED_CHECKPOINTS", "1")
    with pytest.raises(CheckpointReadError, match="it is corrupt"):
        load_checkpoint(str(path))


@pytest.mark.parametrize("key,value,first", [
    ("OPTIM.LR", "-0.1", "error: OPTIM.LR = -0.1 is not allowed: it must be > 0"),
    ("OPTIM.NAME", "'sgdd'", "error: OPTIM.NAME = 'sgdd' is not allowed: choose one of 'adam', 'amsgrad', 'sgd', "),
    ("OPTIM.LR_SCHEDULER", "'cosin'", "error: OPTIM.LR_SCHEDULER = 'cosin' is not allowed: choose one of "),
    ("DATALOADER.TRAIN_X.BATCH_SIZE", "0",
     "error: DATALOADER.TRAIN_X.BATCH_SIZE = 0 is not allowed: it must be >= 1"),
    ("OPTIM.MAX_EPOCH", "-2", "error: OPTIM.MAX_EPOCH = -2 is not allowed: it must be >= 1"),
    ("DATASET.NUM_SHOTS", "-3", "error: DATASET.NUM_SHOTS = -3 is not allowed: it must be >= -1"),
    ("TEST.FINAL_MODEL", "'best'", "error: TEST.FINAL_MODEL = 'best' is not allowed: choose one of 'last_step', "),
])
def test_engine_keys_are_checked_before_anything_is_written(data_root, trainer_yaml, tmp_path, capsys,
                                                            key, value, first):
    out = tmp_path / "run"
    rc, res = cli(base_argv(data_root, trainer_yaml, str(out), key, value), capsys)
    assert rc == 1 and res.err.splitlines()[0].startswith(first) and len(res.err.splitlines()) == 1
    assert not out.exists() and "Loading" not in res.out


def test_one_check_function_covers_engine_and_trainer_keys():
    """What the sweep's pre-check calls per job: the same checks as train.py."""
    import trainers
    from dassl.config import ConfigError, get_cfg_default
    from dassl.engine.config_checks import check_config

    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    cfg.TRAINER.NAME = "MMLoP"
    check_config(cfg)
    cfg.TRAINER.MMLOP.RANK = 99
    with pytest.raises(ConfigError, match=r"^TRAINER.MMLOP.RANK = 99 is not allowed"):
        check_config(cfg)
    cfg.TRAINER.MMLOP.RANK = 1
    cfg.OPTIM.LR = 0.0
    with pytest.raises(ConfigError, match=r"^OPTIM.LR = 0.0 is not allowed: it must be > 0"):
        check_config(cfg)


def test_temp_files_of_a_run_nested_in_the_output_dir_are_left_alone(data_root, trainer_yaml, tmp_path, capsys):
    out = tmp_path / "parent"
    nested = out / "seed1" / "prompt_learner"           # another (live) run's folder below ours
    nested.mkdir(parents=True)
    (out / "seed1" / ".lock").write_text("PID 1 on elsewhere\n")
    theirs = nested / ".model.pth.tar-3.ab12.tmp"
    theirs.write_bytes(b"a save in flight")
    (out / "model").mkdir()
    ours = out / "model" / ".model.pth.tar-2.cd34.tmp"
    ours.write_bytes(b"half a checkpoint")
    rc, res = cli(base_argv(data_root, trainer_yaml, str(out)), capsys)
    assert rc == 0 and theirs.exists() and not ours.exists()
    assert f"Removed a temporary file left by an interrupted save: {ours}" in res.out and str(theirs) not in res.out


def test_failed_download_is_one_message(tmp_path, monkeypatch):
    import urllib.error

    import clip.clip as clip_module

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(clip_module.urllib.request, "urlopen", offline)
    url = "https://example.invalid/models/0123/ViT-X.pt"
    with pytest.raises(clip_module.DownloadError) as info:
        clip_module._download(url, str(tmp_path))
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert train.is_user_error(info.value)
    report = train.failure_report(info.value)
    assert report.startswith(f"error: Could not download {url}: ") and "Traceback" not in report
    assert os.listdir(tmp_path) == []                   # nothing half-downloaded is left


def test_torchvision_built_for_another_torch_is_one_message(tmp_path):
    import subprocess
    import sys

    fake = tmp_path / "site" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    # --list-trainers loads the trainers (--help answers before loading anything).
    r = subprocess.run([sys.executable, "train.py", "--list-trainers"], cwd=repo, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[0].startswith(
        "error: torchvision cannot be imported with torch ") and "operator torchvision::nms does not exist" in r.stderr
    assert "pip install --force-reinstall torch torchvision" in r.stderr


def test_full_disk_is_one_message_and_the_old_file_stays(tmp_path):
    import errno

    from dassl.utils.tools import DiskFullError, atomic_write

    target = tmp_path / "checkpoint"
    target.write_text("model.pth.tar-3\n")

    def full(tmp):
        with open(tmp, "w") as f:
            f.write("model.pth")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError) as info:
        atomic_write(str(target), full)
    assert str(info.value).startswith(f"No space left to write {target} (")
    assert "rerun the same command" in str(info.value) and train.is_user_error(info.value)
    assert target.read_text() == "model.pth.tar-3\n" and os.listdir(tmp_path) == ["checkpoint"]


def _tiny_clip_file(path, torchscript: bool) -> str:
    """A 2-text-layer, 2-vision-layer CLIP saved as a plain state dict or a TorchScript archive."""
    import warnings

    import clip
    from tests.clip_helpers import tiny_model

    model = tiny_model()
    if torchscript:
        images = torch.randn(1, 3, model.visual.input_resolution, model.visual.input_resolution)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(model, (images, clip.tokenize(["a dog"])), check_trace=False), path)
    else:
        torch.save(model.state_dict(), path)
    return str(path)


@pytest.mark.parametrize("torchscript", [False, True], ids=["state_dict", "torchscript"])
@pytest.mark.parametrize("trainer,config,key,value,tower", [
    ("MMLoP", "MMLoP/tiny_4+4ctx_ep10.yaml", "TRAINER.MMLOP.PROMPT_DEPTH", "3", "text"),
    ("VPT", "VPT/tiny_4ctx_ep10.yaml", "TRAINER.VPT.PROMPT_DEPTH_VISION", "3", "vision")])
def test_prompt_depth_above_a_model_files_layers_is_refused_before_the_data(tmp_path, capsys, torchscript,
                                                                           trainer, config, key, value, tower):
    """The layer count is read from the file's parameter names: the run stops before the dataset
    (its folder does not even exist) or the model is loaded, and nothing is written."""
    backbone = _tiny_clip_file(tmp_path / ("tiny.jit" if torchscript else "tiny.pt"), torchscript)
    out = tmp_path / "run"
    argv = ["--root", str(tmp_path / "no_data"), "--trainer", trainer, "--dataset-config-file",
            "configs/datasets/dtd.yaml", "--config-file", f"configs/trainers/{config}",
            "--output-dir", str(out), "--seed", "1", "MODEL.BACKBONE.NAME", backbone, key, value]
    rc, res = cli(argv, capsys)
    assert rc == 1
    assert res.err.splitlines()[0] == f"error: {key} = {int(value)} is not allowed: {backbone} has 2 {tower} layers"
    assert not out.exists() and "Loading" not in res.out


def test_layer_counts_of_model_files(tmp_path):
    from clip.model import build_model_from_config
    from tests.clip_helpers import TINY_RESNET
    from trainers.core.backbone import file_layers

    assert file_layers(_tiny_clip_file(tmp_path / "vit.pt", False)) == (2, 2)
    assert file_layers(_tiny_clip_file(tmp_path / "vit.jit", True)) == (2, 2)
    torch.save(build_model_from_config(TINY_RESNET).state_dict(), tmp_path / "rn.pt")
    assert file_layers(str(tmp_path / "rn.pt")) == (2, 0)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    assert file_layers(str(tmp_path / "junk.pt")) is None and file_layers(str(tmp_path / "absent.pt")) is None
