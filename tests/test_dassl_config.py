"""get_cfg_default and the yacs-compatible merge rules, with errors that name key and source."""
from __future__ import annotations

import os

import pytest
from yacs.config import CfgNode as PlainCN

from dassl.config import ConfigError, cfg_default, get_cfg_default


def test_defaults_hold_dassl_values_and_coop_addition():
    cfg = get_cfg_default()
    assert cfg.OUTPUT_DIR == "./output" and cfg.SEED == -1 and cfg.USE_CUDA is True
    assert cfg.INPUT.SIZE == (224, 224) and cfg.INPUT.RRCROP_SCALE == (0.08, 1.0)
    assert cfg.OPTIM.NAME == "adam" and cfg.OPTIM.LR == 0.0003 and cfg.OPTIM.WEIGHT_DECAY == 5e-4
    assert cfg.OPTIM.LR_SCHEDULER == "single_step" and cfg.OPTIM.STEPSIZE == (-1,) and cfg.OPTIM.MAX_EPOCH == 10
    assert cfg.OPTIM.WARMUP_EPOCH == -1 and cfg.OPTIM.WARMUP_RECOUNT is True
    assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 32 and cfg.DATALOADER.TEST.SAMPLER == "SequentialSampler"
    assert cfg.TEST.FINAL_MODEL == "last_step" and cfg.TEST.EVALUATOR == "Classification"
    assert cfg.TRAIN.CHECKPOINT_FREQ == 0 and cfg.TRAIN.PRINT_FREQ == 10
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "all" and cfg.DATASET.NUM_SHOTS == -1
    assert list(cfg_default.TRAINER.keys()) == ["NAME"]       # trainers add their nodes
    cfg.OPTIM.LR = 1.0
    assert get_cfg_default().OPTIM.LR == 0.0003


def test_yaml_values_are_literal_evaluated_and_coerced(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(
        "INPUT:\n  SIZE: (32, 32)\n  PIXEL_MEAN: (0.5, 0.5, 0.5)\n"
        "OPTIM:\n  WARMUP_CONS_LR: 1e-5\n  NAME: sgd\nMODEL:\n  BACKBONE:\n    NAME: ViT-B/16\n"
    )
    cfg = get_cfg_default()
    cfg.merge_from_file(str(path))
    assert cfg.INPUT.SIZE == (32, 32)
    assert cfg.INPUT.PIXEL_MEAN == [0.5, 0.5, 0.5]
    assert cfg.OPTIM.WARMUP_CONS_LR == 1e-5 and isinstance(cfg.OPTIM.WARMUP_CONS_LR, float)
    assert cfg.OPTIM.NAME == "sgd" and cfg.MODEL.BACKBONE.NAME == "ViT-B/16"


def test_unknown_yaml_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("OPTIM:\n  LRR: 0.1\n")
    with pytest.raises(ConfigError) as info:
        get_cfg_default().merge_from_file(str(path))
    assert "OPTIM.LRR" in str(info.value) and str(path) in str(info.value)
    assert isinstance(info.value, KeyError)


def test_type_mismatch_in_yaml_names_key_and_file(tmp_path):
    path = tmp_path / "bad_type.yaml"
    path.write_text("OPTIM:\n  MAX_EPOCH: ten\n")
    with pytest.raises(ConfigError, match="OPTIM.MAX_EPOCH") as info:
        get_cfg_default().merge_from_file(str(path))
    assert str(path) in str(info.value)


def test_opts_rules():
    cfg = get_cfg_default()
    cfg.merge_from_list(["OPTIM.LR", "0.5", "TEST.NO_TEST", "True", "OPTIM.STEPSIZE", "[3, 6]", "TRAINER.NAME", "CoOp"])
    assert cfg.OPTIM.LR == 0.5 and cfg.TEST.NO_TEST is True and cfg.OPTIM.STEPSIZE == (3, 6)
    assert cfg.TRAINER.NAME == "CoOp"
    with pytest.raises(ConfigError, match=r"Non-existent config key: OPTIM\.NOPE \(in the command-line opts\)"):
        cfg.merge_from_list(["OPTIM.NOPE", "1"])
    with pytest.raises(ConfigError, match="Non-existent config key: FOO.BAR"):
        cfg.merge_from_list(["FOO.BAR", "1"])
    with pytest.raises(ConfigError, match="OPTIM.LR"):
        cfg.merge_from_list(["OPTIM.LR", "fast"])
    with pytest.raises(ConfigError, match="odd length"):
        cfg.merge_from_list(["OPTIM.LR"])


def test_int_for_float_and_integral_float_for_int_are_converted(tmp_path):
    """Upstream declares some float settings as ints and writes values either way: both load,
    converted to the default's type; a fractional value for an int and a bool stay errors."""
    cfg = get_cfg_default()
    cfg.TRAINER.X = PlainCN()
    cfg.TRAINER.X.WEIGHT = 25.0         # our style
    cfg.TRAINER.X.MEAN = 15             # upstream train.py style
    path = tmp_path / "x.yaml"
    path.write_text("TRAINER:\n  X:\n    WEIGHT: 10\n    MEAN: 30.0\n")
    cfg.merge_from_file(str(path))
    assert cfg.TRAINER.X.WEIGHT == 10.0 and type(cfg.TRAINER.X.WEIGHT) is float
    assert cfg.TRAINER.X.MEAN == 30 and type(cfg.TRAINER.X.MEAN) is int
    cfg.merge_from_list(["TRAINER.X.WEIGHT", "5", "TRAINER.X.MEAN", "45.0", "OPTIM.LR", "1"])
    assert type(cfg.TRAINER.X.WEIGHT) is float and type(cfg.TRAINER.X.MEAN) is int
    assert cfg.OPTIM.LR == 1.0 and type(cfg.OPTIM.LR) is float
    with pytest.raises(ConfigError, match=r"TRAINER\.X\.MEAN .*got 2\.5 \(float\)"):
        cfg.merge_from_list(["TRAINER.X.MEAN", "2.5"])
    with pytest.raises(ConfigError, match=r"OPTIM\.LR .*got True \(bool\)"):
        cfg.merge_from_list(["OPTIM.LR", "True"])
    with pytest.raises(ConfigError, match=r"OPTIM\.MAX_EPOCH .*got False \(bool\)"):
        cfg.merge_from_list(["OPTIM.MAX_EPOCH", "False"])


def test_an_upstream_extend_cfg_keeps_our_keys_and_their_types(tmp_path):
    """A trainer node assigned anew (upstream's ``extend_cfg``) keeps the registered trainer's
    other keys; a value that fits either declaration's type merges."""
    import trainers  # noqa: F401  (registers the trainers, whose nodes get_cfg_default adds)

    cfg = get_cfg_default()
    cfg.TRAINER.PROMPTSRC = PlainCN()
    cfg.TRAINER.PROMPTSRC.GPA_MEAN = 15            # upstream's int default
    assert cfg.TRAINER.PROMPTSRC.GPA_MEAN == 15 and cfg.TRAINER.PROMPTSRC.KL_LOSS_WEIGHT == 1.0
    path = tmp_path / "p.yaml"
    path.write_text("TRAINER:\n  PROMPTSRC:\n    GPA_MEAN: 7.5\n    GPA: False\n")
    cfg.merge_from_file(str(path))
    assert cfg.TRAINER.PROMPTSRC.GPA_MEAN == 7.5 and cfg.TRAINER.PROMPTSRC.GPA is False
    with pytest.raises(ConfigError, match="TRAINER.PROMPTSRC.GPA_MEAN"):
        cfg.merge_from_list(["TRAINER.PROMPTSRC.GPA_MEAN", "'late'"])
    with pytest.raises(ConfigError, match=r"Non-existent config key: TRAINER\.PROMPTSRC\.NOPE"):
        cfg.merge_from_list(["TRAINER.PROMPTSRC.NOPE", "1"])


def test_trainer_node_added_with_plain_yacs_merges(tmp_path):
    cfg = get_cfg_default()
    cfg.TRAINER.COOP = PlainCN()
    cfg.TRAINER.COOP.N_CTX = 16
    cfg.TRAINER.COOP.CTX_INIT = ""
    path = tmp_path / "coop.yaml"
    path.write_text("TRAINER:\n  COOP:\n    N_CTX: 4\n    CTX_INIT: a photo of a\n")
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(["TRAINER.COOP.N_CTX", "8"])
    assert cfg.TRAINER.COOP.N_CTX == 8 and cfg.TRAINER.COOP.CTX_INIT == "a photo of a"


def test_missing_config_file_is_named(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        get_cfg_default().merge_from_file(missing)


def test_frozen_config_refuses_changes():
    cfg = get_cfg_default()
    cfg.freeze()
    with pytest.raises(AttributeError):
        cfg.OPTIM.LR = 0.1


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_base_child_overrides_one_key_and_inherits_the_rest(tmp_path):
    _write(tmp_path / "base.yaml", "OPTIM:\n  NAME: sgd\n  LR: 0.1\n  MAX_EPOCH: 20\nSEED: 3\n")
    child = _write(tmp_path / "child.yaml", "_BASE_: base.yaml\nOPTIM:\n  LR: 0.5\n")
    cfg = get_cfg_default()
    cfg.merge_from_file(child)
    assert cfg.OPTIM.LR == 0.5
    assert cfg.OPTIM.NAME == "sgd" and cfg.OPTIM.MAX_EPOCH == 20 and cfg.SEED == 3
    assert "_BASE_" not in cfg


def test_base_chain_of_two(tmp_path):
    _write(tmp_path / "a.yaml", "OPTIM:\n  NAME: sgd\n  LR: 0.1\n  MAX_EPOCH: 20\n")
    _write(tmp_path / "b.yaml", "_BASE_: a.yaml\nOPTIM:\n  LR: 0.2\n  MAX_EPOCH: 30\n")
    c = _write(tmp_path / "c.yaml", "_BASE_: b.yaml\nOPTIM:\n  MAX_EPOCH: 40\n")
    cfg = get_cfg_default()
    cfg.merge_from_file(c)
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH) == ("sgd", 0.2, 40)


def test_base_path_is_relative_to_the_file_that_names_it(tmp_path, monkeypatch):
    _write(tmp_path / "common" / "base.yaml", "OPTIM:\n  NAME: sgd\n  MAX_EPOCH: 7\n")
    _write(tmp_path / "variants" / "v.yaml", "_BASE_: ../common/base.yaml\nOPTIM:\n  LR: 0.5\n")
    monkeypatch.chdir(tmp_path)  # from here "../common/base.yaml" would miss: it must follow the file
    cfg = get_cfg_default()
    cfg.merge_from_file(os.path.join("variants", "v.yaml"))
    assert (cfg.OPTIM.NAME, cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.LR) == ("sgd", 7, 0.5)


def test_list_of_bases_merges_in_order(tmp_path):
    _write(tmp_path / "one.yaml", "OPTIM:\n  NAME: sgd\n  LR: 0.1\n")
    _write(tmp_path / "two.yaml", "OPTIM:\n  LR: 0.2\n  MAX_EPOCH: 9\n")
    child = _write(tmp_path / "child.yaml", "_BASE_: [one.yaml, two.yaml]\nSEED: 5\n")
    cfg = get_cfg_default()
    cfg.merge_from_file(child)
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.SEED) == ("sgd", 0.2, 9, 5)


def test_missing_base_names_both_files(tmp_path):
    child = _write(tmp_path / "child.yaml", "_BASE_: gone.yaml\nSEED: 5\n")
    with pytest.raises(ConfigError) as info:
        get_cfg_default().merge_from_file(child)
    message = str(info.value)
    assert child in message and "'gone.yaml'" in message and str(tmp_path / "gone.yaml") in message


def test_base_cycle_names_the_chain(tmp_path):
    a = _write(tmp_path / "a.yaml", "_BASE_: b.yaml\nSEED: 1\n")
    b = _write(tmp_path / "b.yaml", "_BASE_: a.yaml\nSEED: 2\n")
    with pytest.raises(ConfigError, match="Cycle") as info:
        get_cfg_default().merge_from_file(a)
    assert f"{a} -> {b} -> {a}" in str(info.value)


def test_bad_base_value_names_the_file(tmp_path):
    for value in ("3", "[base.yaml, 3]", "{a: b.yaml}"):
        child = _write(tmp_path / "child.yaml", f"_BASE_: {value}\n")
        with pytest.raises(ConfigError, match="_BASE_ in config file .* must be a path or a list of paths") as info:
            get_cfg_default().merge_from_file(child)
        assert child in str(info.value)


def test_bad_key_inside_a_base_names_the_base_file(tmp_path):
    base = _write(tmp_path / "base.yaml", "OPTIM:\n  LRR: 0.1\n")
    child = _write(tmp_path / "child.yaml", "_BASE_: base.yaml\nSEED: 5\n")
    with pytest.raises(ConfigError, match=r"OPTIM\.LRR") as info:
        get_cfg_default().merge_from_file(child)
    assert f"config file {base}" in str(info.value)
    _write(tmp_path / "base.yaml", "OPTIM:\n  MAX_EPOCH: ten\n")
    with pytest.raises(ConfigError, match=r"OPTIM\.MAX_EPOCH") as info:
        get_cfg_default().merge_from_file(child)
    assert f"config file {base}" in str(info.value)
