"""End to end through train.py's main(): a toy trainer written only against the Dassl API."""
from __future__ import annotations

import json
import os
import platform
import re
import shlex

import pytest
import torch
import torchvision
import yaml

import train
import trainers
from dassl.config import get_cfg_default
from tests.toy_run import (  # noqa: F401  (fixtures)
    CLASSNAMES,
    CRASH_AFTER_EPOCH,
    ToyDasslTrainer,
    base_argv,
    run,
)

LINE_RE = re.compile(
    r"^epoch \[(\d+)/(\d+)\] batch \[(\d+)/(\d+)\] time \d+\.\d{3} \(\d+\.\d{3}\) data \d+\.\d{3} \(\d+\.\d{3}\) "
    r"loss \d+\.\d{4} \(\d+\.\d{4}\) acc \d+\.\d{4} \(\d+\.\d{4}\) lr (\d\.\d{4}e[+-]\d\d) eta \d+:\d\d:\d\d$"
)


def iteration_lines(text: str) -> list[re.Match]:
    return [m for m in map(LINE_RE.match, text.splitlines()) if m]


def test_train_writes_upstream_log_checkpoints_and_results(data_root, trainer_yaml, tmp_path):
    out = str(tmp_path / "run")
    trainer = run(base_argv(data_root, trainer_yaml, out))
    log = open(os.path.join(out, "log.txt")).read()

    ordered = [
        "** Arguments **", "** Config **", "Collecting env info ...", "** System info **",
        "Loading trainer: ToyDasslTrainer", "Loading dataset: ToyColorsTrainCli",
        "Loading evaluator: Classification", "No checkpoint found, train from scratch",
        f"Checkpoint saved to {os.path.join(out, 'model', 'model.pth.tar-4')}",
        "Finish training", "Deploy the last-epoch model", "Evaluate on the *test* set", "=> result",
        "* total: 15", "Elapsed: 0:00:",
    ]
    positions = [log.find(s) for s in ordered]
    assert all(p >= 0 for p in positions), [s for s, p in zip(ordered, positions) if p < 0]
    assert positions == sorted(positions)
    assert "Dataset    ToyColorsTrainCli" in log and "# train_x  24" in log and "# val      6" in log

    # 24 images / batch 4 = 6 batches < PRINT_FREQ 10: every batch of the 4 epochs is printed.
    lines = iteration_lines(log)
    assert [(int(m[1]), int(m[3])) for m in lines] == [(e, b) for e in range(1, 5) for b in range(1, 7)]
    assert all(m[2] == "4" and m[4] == "6" for m in lines)
    first_batch_lr = [float(m[5]) for m in lines if m[3] == "1"]
    assert first_batch_lr == pytest.approx([1e-5, 0.01, 0.01 * (1 + 0.7071067811865476) / 2, 0.005], rel=1e-3)

    acc_line = re.search(r"^\* accuracy: (\d+\.\d)%$", log, re.M)
    assert acc_line and re.search(r"^\* error: \d+\.\d%$", log, re.M)
    assert re.search(r"^\* macro_f1: \d+\.\d%$", log, re.M)

    model_dir = os.path.join(out, "model")
    assert sorted(os.listdir(model_dir)) == ["checkpoint", "model.pth.tar-4"]
    assert open(os.path.join(model_dir, "checkpoint")).read() == "model.pth.tar-4\n"
    ckpt = torch.load(os.path.join(model_dir, "model.pth.tar-4"), weights_only=True)
    assert ckpt["epoch"] == 4 and ckpt["val_result"] is None
    assert set(ckpt["state_dict"]) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert ckpt["scheduler"]["last_epoch"] == 4

    results = json.load(open(os.path.join(out, "results.json")))
    assert results["split"] == "test" and results["total"] == 15 and results["num_classes"] == 3
    assert results["trainer"] == "ToyDasslTrainer" and results["dataset"] == "ToyColorsTrainCli"
    assert results["seed"] == 1 and results["epoch"] == 4 and results["subsample_classes"] == "all"
    assert results["num_trainable_params"] == 3 * 64 * 16 + 16 + 16 * 3 + 3
    assert results["correct"] == round(results["accuracy"] * 15 / 100)
    assert f"{results['accuracy']:.1f}" == acc_line[1]
    assert results["error_rate"] == pytest.approx(100 - results["accuracy"])

    eval_out = str(tmp_path / "eval")
    evaluator = run(base_argv(data_root, trainer_yaml, eval_out, "--eval-only", "--model-dir", out,
                              "--load-epoch", "4"))
    eval_results = json.load(open(os.path.join(eval_out, "results.json")))
    assert eval_results["accuracy"] == results["accuracy"]
    assert eval_results["correct"] == results["correct"] and eval_results["epoch"] == 4
    eval_log = open(os.path.join(eval_out, "log.txt")).read()
    assert f'Loading weights to model from "{os.path.join(out, "model", "model.pth.tar-4")}" (epoch = 4)' in eval_log
    assert "Finish training" not in eval_log
    for name, param in trainer.model.state_dict().items():
        assert torch.equal(param, evaluator.model.state_dict()[name])


def lr_history(out: str) -> list[tuple[int, int, float]]:
    text = ""
    for name in sorted(os.listdir(out), key=lambda n: (n != "log.txt", n)):
        if name.startswith("log.txt"):
            text += open(os.path.join(out, name)).read()
    return [(int(m[1]), int(m[3]), float(m[5])) for m in iteration_lines(text)]


@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights_and_lr(data_root, trainer_yaml, tmp_path):
    full = str(tmp_path / "full")
    run(base_argv(data_root, trainer_yaml, full, "TRAIN.CHECKPOINT_FREQ", "1"))

    resumed = str(tmp_path / "resumed")
    CRASH_AFTER_EPOCH.append(2)
    try:
        with pytest.raises(KeyboardInterrupt):
            run(base_argv(data_root, trainer_yaml, resumed, "TRAIN.CHECKPOINT_FREQ", "1"))
    finally:
        CRASH_AFTER_EPOCH.clear()
    assert sorted(os.listdir(os.path.join(resumed, "model"))) == ["checkpoint", "model.pth.tar-1", "model.pth.tar-2"]
    run(base_argv(data_root, trainer_yaml, resumed, "TRAIN.CHECKPOINT_FREQ", "1"))

    second_log = [n for n in os.listdir(resumed) if n.startswith("log.txt-")]
    assert len(second_log) == 1
    assert "Previous epoch: 2" in open(os.path.join(resumed, second_log[0])).read()
    assert lr_history(resumed) == lr_history(full)
    assert len(lr_history(full)) == 24

    a = torch.load(os.path.join(full, "model", "model.pth.tar-4"), weights_only=True)
    b = torch.load(os.path.join(resumed, "model", "model.pth.tar-4"), weights_only=True)
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["scheduler"] == b["scheduler"]
    for key, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"])
    ra = json.load(open(os.path.join(full, "results.json")))
    rb = json.load(open(os.path.join(resumed, "results.json")))
    assert ra["accuracy"] == rb["accuracy"]


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_config_merge_order_and_seed_flag(tmp_path):
    dataset_yaml = write(tmp_path / "d.yaml",
                         "DATASET:\n  NAME: ToyColorsTrainCli\nOPTIM:\n  MAX_EPOCH: 3\n  LR: 0.5\nSEED: 7\n")
    trainer_yaml = write(tmp_path / "t.yaml", "OPTIM:\n  MAX_EPOCH: 5\nOUTPUT_DIR: from_yaml\n")
    parser = train.build_parser()

    cfg = train.setup_cfg(parser.parse_args(["--dataset-config-file", dataset_yaml, "--config-file", trainer_yaml]))
    assert (cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.LR, cfg.SEED, cfg.OUTPUT_DIR) == (5, 0.5, 7, "from_yaml")
    assert cfg.is_frozen()

    args = parser.parse_args([
        "--dataset-config-file", dataset_yaml, "--config-file", trainer_yaml, "--output-dir", "from_flag",
        "--seed", "0", "--trainer", "CoOp", "OPTIM.MAX_EPOCH", "9", "OUTPUT_DIR", "from_opts",
    ])
    cfg = train.setup_cfg(args)
    assert (cfg.OPTIM.MAX_EPOCH, cfg.SEED, cfg.TRAINER.NAME, cfg.OUTPUT_DIR) == (9, 0, "CoOp", "from_opts")
    cfg = train.setup_cfg(parser.parse_args(["--config-file", trainer_yaml, "--output-dir", "from_flag"]))
    assert cfg.OUTPUT_DIR == "from_flag" and cfg.SEED == -1


def test_cli_errors_are_one_clear_message(tmp_path, capsys, data_root):
    missing = str(tmp_path / "missing.yaml")
    assert train.cli(["--config-file", missing]) == 1
    assert f"error: Config file not found: {missing}" in capsys.readouterr().err

    bad = write(tmp_path / "bad.yaml", "OPTIM:\n  LRR: 0.1\n")
    assert train.cli(["--config-file", bad]) == 1
    err = capsys.readouterr().err
    assert "OPTIM.LRR" in err and bad in err

    assert train.cli(["--output-dir", str(tmp_path / "o"), "OPTIM.NOPE", "1"]) == 1
    assert "Non-existent config key: OPTIM.NOPE (in the command-line opts)" in capsys.readouterr().err

    argv = ["--root", data_root, "--trainer", "ToyDaslTrainer", "--output-dir", str(tmp_path / "o2"),
            "DATASET.NAME", "ToyColorsTrainCli", "DATALOADER.NUM_WORKERS", "0", "INPUT.SIZE", "(8, 8)"]
    assert train.cli(argv) == 1
    assert "but got [ToyDaslTrainer] (do you mean [ToyDasslTrainer]?)" in capsys.readouterr().err


def test_best_val_saves_and_deploys_the_best_checkpoint(data_root, trainer_yaml, tmp_path):
    out = str(tmp_path / "best")
    run(base_argv(data_root, trainer_yaml, out, "TEST.FINAL_MODEL", "best_val", "OPTIM.MAX_EPOCH", "2",
                  "TRAIN.PRINT_FREQ", "4"))
    log = open(os.path.join(out, "log.txt")).read()
    assert [(int(m[1]), int(m[3])) for m in iteration_lines(log)] == [(1, 4), (2, 4)]  # 6 batches, PRINT_FREQ 4
    assert log.count("Evaluate on the *val* set") == 2
    assert "Deploy the model with the best val performance" in log
    best_path = os.path.join(out, "model", "model-best.pth.tar")
    assert f"Checkpoint saved to {best_path}" in log
    best = torch.load(best_path, weights_only=True)
    assert isinstance(best["val_result"], float)
    expected = f'(epoch = {best["epoch"]}, val_result = {best["val_result"]:.1f})'
    assert f'Loading weights to model from "{best_path}" {expected}' in log
    assert open(os.path.join(out, "model", "checkpoint")).read() == "model.pth.tar-2\n"
    assert log.rindex("Evaluate on the *test* set") > log.index("Deploy the model with the best val performance")
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["split"] == "test" and results["epoch"] == best["epoch"]
    assert not os.path.exists(os.path.join(out, "tensorboard")) or os.listdir(os.path.join(out, "tensorboard"))


def test_no_train_builds_the_trainer_only(data_root, trainer_yaml, tmp_path):
    out = str(tmp_path / "no_train")
    trainer = run(base_argv(data_root, trainer_yaml, out, "--no-train"))
    assert isinstance(trainer, ToyDasslTrainer) and trainer.get_model_names() == ["model"]
    assert sorted(os.listdir(out)) == ["config.yaml", "log.txt"]
    assert "Loading evaluator: Classification" in open(os.path.join(out, "log.txt")).read()


def test_run_records_config_yaml_and_provenance(data_root, trainer_yaml, tmp_path):
    out = str(tmp_path / "records")
    argv = base_argv(data_root, trainer_yaml, out, "OPTIM.MAX_EPOCH", "1", "OPTIM.LR", "0.02")
    assert train.cli(argv) == 0

    config_path = os.path.join(out, "config.yaml")
    with open(config_path) as f:
        saved = yaml.safe_load(f)
    assert saved["OPTIM"]["LR"] == 0.02 and saved["OPTIM"]["MAX_EPOCH"] == 1  # from the opts
    assert saved["OPTIM"]["NAME"] == "sgd" and saved["INPUT"]["SIZE"] == [8, 8]  # from the YAML file
    assert saved["SEED"] == 1 and saved["TRAINER"]["NAME"] == "ToyDasslTrainer" and saved["OUTPUT_DIR"] == out
    expected = train.setup_cfg(train.build_parser().parse_args(argv))
    remerged = get_cfg_default()
    trainers.extend_cfg(remerged)
    remerged.merge_from_file(config_path)
    assert remerged == expected

    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert results["command"] == shlex.join(["python", "train.py", *argv])
    assert "OPTIM.LR 0.02" in results["command"] and f"--output-dir {shlex.quote(out)}" in results["command"]
    assert results["versions"]["torch"] == torch.__version__
    assert results["versions"]["torchvision"] == torchvision.__version__
    assert results["versions"]["python"] == platform.python_version()
    commit = results["git_commit"]
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}", commit)
    assert results["git_dirty"] is None if commit is None else isinstance(results["git_dirty"], bool)
    assert results["trainer"] == "ToyDasslTrainer" and results["epoch"] == 1  # the old fields are unchanged

    in_process = str(tmp_path / "in_process")
    run(base_argv(data_root, trainer_yaml, in_process, "OPTIM.MAX_EPOCH", "1"))  # main() without a command line
    with open(os.path.join(in_process, "results.json")) as f:
        assert json.load(f)["command"] is None


def test_failed_run_still_has_its_config(tmp_path, capsys, data_root):
    out = tmp_path / "failed"
    argv = ["--root", data_root, "--trainer", "NoSuchTrainer", "--output-dir", str(out),
            "DATASET.NAME", "ToyColorsTrainCli"]
    assert train.cli(argv) == 1
    assert "NoSuchTrainer" in capsys.readouterr().err
    assert yaml.safe_load((out / "config.yaml").read_text())["TRAINER"]["NAME"] == "NoSuchTrainer"


def test_help_groups_the_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        train.cli(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "CoOp-family options:" in text and f"{train.COMPAT_GROUP_TITLE}:" in text
    used, compat = text.split(f"{train.COMPAT_GROUP_TITLE}:")[0], text.split(f"{train.COMPAT_GROUP_TITLE}:")[1]
    for flag in ("--root", "--output-dir", "--trainer", "--backbone", "--transforms", "--eval-only", "--no-train"):
        assert flag in used and flag not in compat
    for flag in ("--source-domains", "--target-domains", "--head"):
        assert flag in compat and f"{flag} " not in used.split("CoOp-family options:")[1]
    assert "KEY VALUE" in text
