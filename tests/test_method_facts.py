"""Each method fact has one source: the shared trainer keys (declared once in the core, each
trainer's defaults as documented) and MMLoP's ablation rows (read by the demo, the sweep example,
the configs and docs/METHOD.md)."""
from __future__ import annotations

import ast
import os
import re
import sys
from dataclasses import replace

import pytest

import trainers  # noqa: F401  (registers the trainers)
from dassl.config import ConfigError, get_cfg_default
from trainers.core import shared_keys
from trainers.core.methods import method_info

# The default node of every trainer (the values its docstring documents; upstream's where it has
# the key). A changed default is a change of every run that does not set the key: update the
# trainer's docstring with it.
DEFAULT_NODES = {
    "COCOOP": {"N_CTX": 16, "CTX_INIT": "", "PREC": "fp16", "PROMPT_PREC": "fp32", "TRUNCATE_TEXT": True},
    "COOP": {"N_CTX": 16, "CSC": False, "CTX_INIT": "", "CLASS_TOKEN_POSITION": "end", "PREC": "fp16",
             "PROMPT_PREC": "fp32", "TRUNCATE_TEXT": True, "CACHE_TEXT": True, "SHARED_PREFIX": True},
    "IVLP": {"N_CTX_TEXT": 2, "N_CTX_VISION": 2, "PROMPT_DEPTH_TEXT": 9, "PROMPT_DEPTH_VISION": 9,
             "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_PREC": "fp32", "TRUNCATE_TEXT": True,
             "CACHE_TEXT": True, "SHARED_PREFIX": True},
    "MAPLE": {"N_CTX": 2, "CTX_INIT": "a photo of a", "PROMPT_DEPTH": 9, "PREC": "fp16", "PROMPT_PREC": "fp32",
              "TRUNCATE_TEXT": True, "CACHE_TEXT": True, "SHARED_PREFIX": True},
    "MMLOP": {"N_CTX": 4, "RANK": 1, "PROMPT_DEPTH": 9, "SHARE_U": "modality", "FULL_RANK": False,
              "CTX_INIT": "a photo of a", "BALANCED_INIT": False, "TEXT_LOSS_WEIGHT": 25.0,
              "IMAGE_LOSS_WEIGHT": 10.0, "KL_LOSS_WEIGHT": 1.0, "DRIFT_CORRECTION": True, "GPA": False,
              "GPA_MEAN": 15.0, "GPA_STD": 1.0, "PREC": "fp16", "TRUNCATE_TEXT": True, "CACHE_TEXT": True,
              "SHARED_PREFIX": True},
    "PROMPTSRC": {"N_CTX_TEXT": 4, "N_CTX_VISION": 4, "PROMPT_DEPTH_TEXT": 9, "PROMPT_DEPTH_VISION": 9,
                  "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_PREC": "fp32", "TRUNCATE_TEXT": True,
                  "CACHE_TEXT": True, "SHARED_PREFIX": True, "TEXT_LOSS_WEIGHT": 25.0, "IMAGE_LOSS_WEIGHT": 10.0,
                  "KL_LOSS_WEIGHT": 1.0, "GPA": True, "GPA_MEAN": 15.0, "GPA_STD": 1.0},
    "VPT": {"N_CTX_VISION": 2, "PROMPT_DEPTH_VISION": 1, "CTX_INIT": "a photo of a", "PREC": "fp16"},
    "ZEROSHOTCLIP": {"ENSEMBLE": False, "PREC": "fp16"},
}


def _classes():
    from dassl.engine import TRAINER_REGISTRY

    return {n: TRAINER_REGISTRY.get(n) for n in TRAINER_REGISTRY.registered_names()
            if TRAINER_REGISTRY.get(n).__module__.startswith("trainers.")}


def test_every_trainer_keeps_its_documented_defaults():
    cfg = get_cfg_default()
    nodes = {cls.config_node: dict(cfg.TRAINER[cls.config_node]) for cls in _classes().values()}
    assert nodes == DEFAULT_NODES


@pytest.mark.parametrize("name", sorted(_classes()))
def test_each_trainer_docstring_names_every_key_of_its_node(name):
    cls = _classes()[name]
    doc = sys.modules[cls.__module__].__doc__
    node = DEFAULT_NODES[cls.config_node]
    assert f"TRAINER.{cls.config_node}" in doc
    missing = [k for k in node if not re.search(rf"\b{k}\b", doc)]
    assert not missing, f"{cls.__module__}'s docstring does not name {missing}"
    # Where the docstring has a key table, its default column is the node's default.
    for line in doc.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 3 and cells[0] in node:
            assert ast.literal_eval(cells[1]) == node[cells[0]], (name, cells[0])


def test_shared_keys_are_declared_once_in_the_core():
    """Every shared key a trainer has comes with the core's default; the core's table documents
    each shared key."""
    for node_name, node in DEFAULT_NODES.items():
        for key in set(node) & set(shared_keys.SHARED_DEFAULTS):
            assert node[key] == shared_keys.SHARED_DEFAULTS[key], (node_name, key)
    for key, default in shared_keys.SHARED_DEFAULTS.items():
        assert re.search(rf"^{key}\s+{re.escape(repr(default).replace(chr(39), chr(34)))}\s",
                         shared_keys.__doc__, re.M), key
    with pytest.raises(KeyError, match="'SHARED_PREFIXES'.* are not shared trainer keys"):
        shared_keys.add_shared_keys({}, ("SHARED_PREFIXES",))


@pytest.mark.parametrize("name", sorted(_classes()))
def test_shared_key_checks_run_for_every_trainer(name):
    cls = _classes()[name]
    cfg = get_cfg_default()
    node = cfg.TRAINER[cls.config_node]
    node.PREC = "fp8"
    with pytest.raises(ConfigError, match=rf"^TRAINER\.{cls.config_node}\.PREC = 'fp8' is not allowed: "
                                          r"choose one of 'fp32', 'fp16', 'bf16', 'amp'"):
        cls.check_config(cfg, node, f"TRAINER.{cls.config_node}")


def test_speed_ups_reach_the_model_as_keyword_arguments():
    cfg = get_cfg_default()
    assert shared_keys.speed_ups(cfg.TRAINER.COCOOP) == {"truncate_text": True}
    cfg.TRAINER.COOP.CACHE_TEXT = False
    assert shared_keys.speed_ups(cfg.TRAINER.COOP) == {"truncate_text": True, "cache_text": False,
                                                       "shared_prefix": True}
    assert shared_keys.speed_ups(cfg.TRAINER.VPT) == {}


# --- MMLoP's ablation rows: defined once (MMLoP.ablation_rows + the row configs) ----------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def mmlop():
    return method_info("MMLoP")


def test_every_ablation_config_is_a_row_and_switches_only_mmlop_keys(mmlop):
    stems = sorted(f[:-5] for f in os.listdir(mmlop.config_dir) if "_abl" in f and f.endswith(".yaml"))
    rows = mmlop.ablation_rows
    assert sorted(r.config for r in rows if r.config != mmlop.default_config("base2new")) == stems
    assert [r.config for r in rows].count(mmlop.default_config("base2new")) == 1
    cfg = get_cfg_default()
    for row in rows:
        switches = mmlop.ablation_switches(row)
        assert switches[::2] and all(k.startswith("TRAINER.MMLOP.") for k in switches[::2]) \
            or row.config == mmlop.default_config("base2new")
        # The switches applied to the method's config give the row's config.
        whole = cfg.clone()
        whole.merge_from_file(mmlop.config_file(row.config))
        switched = cfg.clone()
        switched.merge_from_file(mmlop.config_file(mmlop.default_config("base2new")))
        switched.merge_from_list(list(switches))
        assert switched == whole, row


def test_the_sweep_example_runs_the_rows(mmlop):
    from sweep.spec import load_sweep_file

    spec, _ = load_sweep_file(os.path.join(REPO, "sweep", "examples", "ablation.yaml"))
    assert [(t.trainer, t.cfg, t.label, t.opts) for t in spec.trainers] == \
        [("MMLoP", r.config, r.label, ()) for r in mmlop.ablation_rows]


def test_the_method_page_shows_the_rows(mmlop):
    with open(os.path.join(REPO, "docs", "METHOD.md"), encoding="utf-8") as f:
        section = f.read().split("## 5. Ablation rows", 1)[1].split("\n## ", 1)[0]
    table = [[c.strip().strip("`") for c in line.strip().strip("|").split("|")]
             for line in section.splitlines() if line.startswith("| ") and not line.startswith("| row ")]
    assert [cells[0] for cells in table] == [r.label for r in mmlop.ablation_rows]
    for cells, row in zip(table, mmlop.ablation_rows):
        stem = cells[1]
        assert stem == row.config or (stem.startswith("...") and row.config.endswith(stem[3:])), cells
        switches = mmlop.ablation_switches(row)
        shown = " ".join(f"{k.rsplit('.', 1)[1]} {v}" for k, v in zip(switches[::2], switches[1::2]))
        assert cells[2] == (shown or "none"), cells


def test_a_row_config_that_sets_more_than_its_switches_is_refused(tmp_path, mmlop):
    from trainers.core.methods import AblationRow

    (tmp_path / "base.yaml").write_text("OPTIM:\n  MAX_EPOCH: 30\n")
    (tmp_path / "base_abl1_short.yaml").write_text(
        "_BASE_: base.yaml\nOPTIM:\n  MAX_EPOCH: 5\nTRAINER:\n  MMLOP:\n    RANK: 2\n")
    (tmp_path / "base_abl2_rank.yaml").write_text("_BASE_: base.yaml\nTRAINER:\n  MMLOP:\n    RANK: 2\n")
    (tmp_path / "base_rank.yaml").write_text("_BASE_: base.yaml\nTRAINER:\n  MMLOP:\n    RANK: 2\n")
    info = replace(mmlop, config_dir=str(tmp_path))
    assert info.ablation_switches(AblationRow("base", "base")) == ()
    row = AblationRow("+ rank 2", "base_abl2_rank")
    assert (info.ablation_switches(row), info.ablation_name(row)) == (("TRAINER.MMLOP.RANK", "2"), "rank")
    with pytest.raises(ValueError, match=r"base_abl1_short.yaml: an ablation row's config holds only "
                                         r"_BASE_ and the TRAINER.MMLOP keys .* it also sets OPTIM"):
        info.ablation_switches(AblationRow("short", "base_abl1_short"))
    with pytest.raises(ValueError, match=r"'base_rank' is not named <config>_abl<k>_<name>"):
        info.ablation_name(AblationRow("rank", "base_rank"))


def _too_deep_models():
    """Per trainer: the depth keys set beyond the 2-layer tiny CLIP, the key the message names,
    and the model built directly in Python with the same depths."""
    from trainers.ivlp import IVLPCLIP, IVLPSettings
    from trainers.maple import MaPLeCLIP
    from trainers.mmlop import MMLoPCLIP, MMLoPSettings
    from trainers.vpt import VPTCLIP

    names = ["a", "b"]
    return {
        "IVLP": ({"PROMPT_DEPTH_TEXT": 1, "PROMPT_DEPTH_VISION": 3}, "PROMPT_DEPTH_VISION",
                 lambda m: IVLPCLIP(m, names, IVLPSettings(depth_text=1, depth_vision=3))),
        "PromptSRC": ({"PROMPT_DEPTH_TEXT": 3, "PROMPT_DEPTH_VISION": 1}, "PROMPT_DEPTH_TEXT",
                      lambda m: IVLPCLIP(m, names, IVLPSettings(depth_text=3, depth_vision=1,
                                                                key="TRAINER.PROMPTSRC"))),
        "MaPLe": ({"PROMPT_DEPTH": 3}, "PROMPT_DEPTH", lambda m: MaPLeCLIP(m, names, depth=3)),
        "VPT": ({"PROMPT_DEPTH_VISION": 3}, "PROMPT_DEPTH_VISION", lambda m: VPTCLIP(m, names, n_ctx=2, depth=3)),
        "MMLoP": ({"PROMPT_DEPTH": 3}, "PROMPT_DEPTH",
                  lambda m: MMLoPCLIP(m, names, MMLoPSettings(prompt_depth=3))),
    }


@pytest.mark.parametrize("name", ["IVLP", "PromptSRC", "MaPLe", "VPT", "MMLoP"])
def test_config_time_and_model_time_checks_are_one_rule(tmp_path, name):
    """A depth the backbone lacks is refused before loading (``check_config``, layers counted in
    the weights file) and by the model built directly in Python, with one message."""
    import torch

    from tests.clip_helpers import tiny_model

    model = tiny_model()                                   # 2 text and 2 vision layers
    path = str(tmp_path / "tiny.pt")
    torch.save(model.state_dict(), path)
    depths, key, build = _too_deep_models()[name]
    cls = _classes()[name]
    cfg = get_cfg_default()
    cfg.MODEL.BACKBONE.NAME = path
    node = cfg.TRAINER[cls.config_node]
    node.update(depths)
    with pytest.raises(ConfigError) as before:
        cls.check_config(cfg, node, f"TRAINER.{cls.config_node}")
    with pytest.raises(ValueError) as built:
        build(model)
    prefix = f"TRAINER.{cls.config_node}.{key} = 3 is not allowed: "
    assert str(before.value).startswith(prefix), before.value
    assert str(built.value) == str(before.value).replace(path, "this backbone")
