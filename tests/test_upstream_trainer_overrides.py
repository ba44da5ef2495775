"""A user's trainer file that registers one of our names (as upstream's ``trainers/coop.py`` does):
the conflict leaves every other trainer usable and names both files; ``MMLOP_TRAINER_OVERRIDES``
makes the user's class the registered one. Runs ``import trainers`` in subprocesses, so the
registry of the test process stays clean. Also the ``Registry`` rules themselves."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dassl.utils.registry import DuplicateRegistrationError, Registry, check_availability

REPO = Path(__file__).resolve().parents[1]
OTHERS = ["ZeroshotCLIP", "CoCoOp", "VPT", "IVLP", "MaPLe", "PromptSRC", "MMLoP"]

# Written the way upstream CoOp's trainers/coop.py starts (its imports, its registration).
UPSTREAM_STYLE_COOP = '''\
import torch
import torch.nn as nn
from torch.nn import functional as F

from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
from dassl.utils import load_pretrained_weights, load_checkpoint
from dassl.optim import build_optimizer, build_lr_scheduler

from clip import clip
from clip.simple_tokenizer import SimpleTokenizer as _Tokenizer

_tokenizer = _Tokenizer()


@TRAINER_REGISTRY.register()
class CoOp(TrainerX):
    """Context Optimization (CoOp), the user's copy."""

    def check_cfg(self, cfg):
        assert cfg.TRAINER.COOP.PREC in ["fp16", "fp32", "amp"]

    def build_model(self):
        raise NotImplementedError("not needed by this test")
'''

PROBE = '''
import json, sys
import trainers
from dassl.config import get_cfg_default
from dassl.engine import TRAINER_REGISTRY as R
out = {"names": list(R.registered_names()), "contains_coop": "CoOp" in R}
try:
    cls = R.get("CoOp")
    out["coop"] = [cls.__module__, R.origin("CoOp").file]
    out["overridden"] = [o.file for _, o in R.overridden("CoOp")]
except KeyError as e:
    out["coop_error"] = str(e)
    out["coop_error_type"] = type(e).__name__
out["ivlp"] = R.get("IVLP").__module__
cfg = get_cfg_default()
trainers.extend_cfg(cfg)
out["nodes"] = sorted(cfg.TRAINER.keys())
out["coop_keys"] = sorted(cfg.TRAINER.COOP.keys()) if "COOP" in cfg.TRAINER else None
print(json.dumps(out))
'''


def _env(**values: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MMLOP_TRAINERS", "MMLOP_TRAINER_OVERRIDES")}
    env.update(values)
    return env


def _probe(**env: str):
    r = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=_env(**env),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


@pytest.fixture
def user_coop(tmp_path) -> Path:
    path = tmp_path / "user_trainers" / "coop_upstream.py"
    path.parent.mkdir()
    path.write_text(UPSTREAM_STYLE_COOP)
    return path


def test_conflict_leaves_other_trainers_and_names_both_files(user_coop, tmp_path):
    out, err = _probe(MMLOP_TRAINERS=str(user_coop))
    assert all(name in out["names"] for name in OTHERS) and "CoOp" not in out["names"]
    assert out["contains_coop"] and out["ivlp"] == "trainers.ivlp"
    assert "IVLP" in out["nodes"] and "MMLOP" in out["nodes"]     # other configs still build
    message = out["coop_error"]
    assert out["coop_error_type"] == "DuplicateRegistrationError"
    assert str(REPO / "trainers" / "coop.py") in message and str(user_coop) in message
    assert "trainers.coop" in message and "mmlop_user_trainers.coop_upstream" in message
    assert f"MMLOP_TRAINER_OVERRIDES=CoOp={user_coop}" in message
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "CoOp" in warnings[0] and str(user_coop) in warnings[0]

    # using the name stops with that message; using another trainer is not affected
    r = subprocess.run([sys.executable, "train.py", "--trainer", "CoOp", "--output-dir",
                        str(tmp_path / "run")], cwd=REPO, env=_env(MMLOP_TRAINERS=str(user_coop)),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert "error: " in r.stderr and str(user_coop) in r.stderr and "trainers/coop.py" in r.stderr
    r = subprocess.run([sys.executable, "train.py", "--list-trainers"], cwd=REPO,
                       env=_env(MMLOP_TRAINERS=str(user_coop)), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and all(name in r.stdout for name in OTHERS)


def test_override_switch_makes_the_user_class_win(user_coop):
    out, err = _probe(MMLOP_TRAINERS=str(user_coop), MMLOP_TRAINER_OVERRIDES="CoOp,CoCoOp")
    assert out["coop"] == ["mmlop_user_trainers.coop_upstream", str(user_coop)]
    assert out["overridden"] == [str(REPO / "trainers" / "coop.py")]
    assert "CoOp" in out["names"] and all(name in out["names"] for name in OTHERS)
    # the user's class defines no config node: ours (a superset of upstream's keys) is added
    assert {"N_CTX", "CSC", "CTX_INIT", "PREC", "CLASS_TOKEN_POSITION"} <= set(out["coop_keys"])
    assert not [line for line in err.splitlines() if line.startswith("warning:")]
    assert f"note: trainer CoOp comes from {user_coop}" in err


def test_override_with_a_path_imports_the_file_and_checks_it(user_coop):
    out, _ = _probe(MMLOP_TRAINER_OVERRIDES=f"CoOp={user_coop}")       # no MMLOP_TRAINERS needed
    assert out["coop"] == ["mmlop_user_trainers.coop_upstream", str(user_coop)]
    # a path that does not register the name: that name is unusable, saying why
    out, err = _probe(MMLOP_TRAINERS=str(user_coop),
                      MMLOP_TRAINER_OVERRIDES=f"CoOp,CoCoOp={user_coop}")
    assert "CoCoOp" not in out["names"] and out["coop"][0] == "mmlop_user_trainers.coop_upstream"
    assert "registers no class named \"CoCoOp\"" in err and "trainers/cocoop.py" in err


def test_malformed_switch_is_an_error_naming_the_variable():
    r = subprocess.run([sys.executable, "-c", "import trainers"], cwd=REPO, capture_output=True,
                       text=True, env=_env(MMLOP_TRAINER_OVERRIDES="Co Op"), timeout=300)
    assert r.returncode != 0 and "MMLOP_TRAINER_OVERRIDES" in r.stderr


# ----------------------------------------------------------------------------- Registry rules


def _make(name: str):
    return type(name, (), {"__module__": __name__})


def test_registry_duplicates_overrides_and_deferred_conflicts():
    reg = Registry("T")
    first, second = _make("A"), _make("A")
    reg.register(first)
    with pytest.raises(DuplicateRegistrationError) as info:    # a KeyError, as Dassl's
        reg.register(second)
    assert isinstance(info.value, KeyError)
    assert str(info.value).count(__file__) == 2 and "force=True" in str(info.value)
    assert reg.get("A") is first
    reg.register(second, force=True)
    assert reg.get("A") is second

    reg.allow_override("B")
    b1, b2 = _make("B"), _make("B")
    reg.register(b1)
    reg.register(b2)
    assert reg.get("B") is b2 and [obj for obj, _ in reg.overridden("B")] == [b1]

    with reg.deferring_conflicts():
        c1, c2 = _make("C"), _make("C")
        reg.register(c1)
        reg.register(c2)                                        # no exception here
    assert "C" in reg and "C" not in reg.registered_names() and list(reg.conflicts()) == ["C"]
    with pytest.raises(DuplicateRegistrationError, match="registered 2 times"):
        reg.get("C")
    with pytest.raises(DuplicateRegistrationError, match="registered 2 times"):
        check_availability("C", reg.registered_names())
    check_availability("A", reg.registered_names())
    with pytest.raises(ValueError, match=r"do you mean \[A\]"):
        check_availability("AA", reg.registered_names())


def test_registry_override_by_file_keeps_that_files_registration():
    reg = Registry("T")
    ours, theirs = _make("D"), _make("D")
    theirs.__module__ = "json"                                  # "defined" in json/__init__.py
    reg.allow_override("D", json.__file__)
    reg.register(theirs)
    reg.register(ours)                                          # later, but not from that file
    assert reg.get("D") is theirs and reg.origin("D").file == os.path.abspath(json.__file__)
