"""Upstream users' files on this project: every YAML config and every ``TRAINER.*`` override of
the three upstream repositories' scripts (``../shared/data/upstream_configs``) parses through our
``train.py``; ``train.py`` files written by us in the layout of CoOp's, MaPLe's and PromptSRC's
(their imports, an ``extend_cfg`` that defines only their own nodes, their flags) run every one of
our trainers with our YAML files and with command-line overrides of keys upstream does not know;
upstream trainer files look weights files up through ``clip._MODELS`` / ``clip._download``; a
name-only ``MMLOP_TRAINER_OVERRIDES`` picks the file that is not ours, even when it sorts first."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import train
import trainers  # noqa: F401  (registers the trainers)
from clip.model import build_model_from_config
from dassl.engine import TRAINER_REGISTRY
from tests.clip_helpers import save_tiny_clip

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = REPO.parent / "shared" / "data" / "upstream_configs"
needs_upstream = pytest.mark.skipif(not UPSTREAM.is_dir(),
                                    reason=f"{UPSTREAM} (upstream configs and scripts) is absent")
TINY = dict(vision_layers=4, transformer_layers=4, vision_width=64, transformer_width=64,
            transformer_heads=1, image_resolution=32, vision_patch_size=8, embed_dim=32)


def _env(**values: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MMLOP_TRAINERS", "MMLOP_TRAINER_OVERRIDES")}
    env.update(OMP_NUM_THREADS="1", **values)
    return env


# ------------------------------------------------------------- upstream YAMLs and script overrides


def _upstream_yamls() -> list[str]:
    return sorted(glob.glob(str(UPSTREAM / "**" / "*.yaml"), recursive=True))


@needs_upstream
def test_every_upstream_yaml_loads_through_our_train_py():
    files = _upstream_yamls()
    assert len(files) > 40
    for path in files:
        args = train.build_parser().parse_args(["--config-file", path])
        cfg = train.setup_cfg(args)
        content = yaml.safe_load(open(path))
        for node, keys in (content.get("TRAINER") or {}).items():
            for key, value in keys.items():
                # ints where our default is a float (PromptSRC's loss weights) keep their value
                assert cfg.TRAINER[node][key] == value or isinstance(value, str), (path, node, key)
    cfg = train.setup_cfg(train.build_parser().parse_args(["--config-file", str(
        UPSTREAM / "PromptSRC/configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml")]))
    assert cfg.TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT == 25.0
    assert type(cfg.TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT) is float


# Values of the scripts' positional arguments, as the repositories' READMEs run them
# (CoOp: ``bash main.sh caltech101 rn50_ep50 end 16 1 False``).
POSITIONAL = {"$1": "caltech101", "$2": "rn50_ep50", "$3": "end", "$4": "16", "$5": "1",
              "$6": "False"}


def _script_overrides(path: str) -> list[tuple[str, str]]:
    """The ``TRAINER.<NODE>.<KEY> VALUE`` pairs of a bash script, variables resolved from the
    script's own assignments (``NCTX=16``, ``CTP=$3``)."""
    text = open(path).read()
    assigned = dict(re.findall(r"^\s*([A-Z_]+)=(\S+)", text, flags=re.M))
    pairs = []
    for key, value in re.findall(r"(TRAINER\.[A-Z_]+\.[A-Z_]+)\s+(\S+)", text):
        name = re.fullmatch(r"\$\{?([A-Z_]+)\}?", value)
        if name:
            value = assigned[name.group(1)]
            value = POSITIONAL.get(value, value)
        pairs.append((key, value))
    return pairs


@needs_upstream
def test_every_trainer_override_in_upstream_scripts_parses():
    scripts = sorted(glob.glob(str(UPSTREAM / "**" / "*.sh"), recursive=True))
    pairs = [p for s in scripts for p in _script_overrides(s)]
    assert len(pairs) >= 18 and {k for k, _ in pairs} == {
        "TRAINER.COOP.N_CTX", "TRAINER.COOP.CSC", "TRAINER.COOP.CLASS_TOKEN_POSITION"}
    # plus the few-shot group B setting PromptSRC's README has users append by hand
    pairs += [("TRAINER.PROMPTSRC.GPA_MEAN", "45"), ("TRAINER.PROMPTSRC.GPA_STD", "5")]
    for key, value in pairs:
        cfg = train.setup_cfg(train.build_parser().parse_args([key, value]))
        node, name = key.split(".")[1:]
        assert str(cfg.TRAINER[node][name]) in (value, f"{value}.0"), (key, value)


# ----------------------------------------------------------- upstream-layout train.py files

TRAIN_PY = '''\
import argparse

import torch

from dassl.utils import setup_logger, set_random_seed, collect_env_info
from dassl.config import get_cfg_default
from dassl.engine import build_trainer

# custom
import datasets.oxford_pets
import datasets.dtd
{trainer_imports}


def print_args(args, cfg):
    print("***************")
    print("** Arguments **")
    print("***************")
    for key in sorted(args.__dict__):
        print("{{}}: {{}}".format(key, args.__dict__[key]))
    print("************")
    print("** Config **")
    print("************")
    print(cfg)


def reset_cfg(cfg, args):
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed:
        cfg.SEED = args.seed
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone


def extend_cfg(cfg):
    from yacs.config import CfgNode as CN
{extend_cfg}
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"


def setup_cfg(args):
    cfg = get_cfg_default()
    extend_cfg(cfg)
    if args.dataset_config_file:
        cfg.merge_from_file(args.dataset_config_file)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    reset_cfg(cfg, args)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def main(args):
    cfg = setup_cfg(args)
    if cfg.SEED >= 0:
        print("Setting fixed seed: {{}}".format(cfg.SEED))
        set_random_seed(cfg.SEED)
    setup_logger(cfg.OUTPUT_DIR)
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
    print_args(args, cfg)
    print("Collecting env info ...")
    print("** System info **\\n{{}}\\n".format(collect_env_info()))
    trainer = build_trainer(cfg)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
        return
    if not args.no_train:
        trainer.train()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=str, default="")
    parser.add_argument("--output-dir", type=str, default="")
    parser.add_argument("--resume", type=str, default="")
    parser.add_argument("--seed", type=int, default=-1)
    parser.add_argument("--source-domains", type=str, nargs="+")
    parser.add_argument("--target-domains", type=str, nargs="+")
    parser.add_argument("--transforms", type=str, nargs="+")
    parser.add_argument("--config-file", type=str, default="")
    parser.add_argument("--dataset-config-file", type=str, default="")
    parser.add_argument("--trainer", type=str, default="")
    parser.add_argument("--backbone", type=str, default="")
    parser.add_argument("--head", type=str, default="")
    parser.add_argument("--eval-only", action="store_true")
    parser.add_argument("--model-dir", type=str, default="")
    parser.add_argument("--load-epoch", type=int)
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER)
    main(parser.parse_args())
'''

# Each repository's extend_cfg: its own nodes and keys only, with its defaults (ints included).
NODES = {
    "COOP": [("N_CTX", 16), ("CSC", False), ("CTX_INIT", ""), ("PREC", "fp16"),
             ("CLASS_TOKEN_POSITION", "end")],
    "COCOOP": [("N_CTX", 16), ("CTX_INIT", ""), ("PREC", "fp16")],
    "MAPLE": [("N_CTX", 2), ("CTX_INIT", "a photo of a"), ("PREC", "fp16"), ("PROMPT_DEPTH", 9)],
    "IVLP": [("N_CTX_VISION", 2), ("N_CTX_TEXT", 2), ("CTX_INIT", "a photo of a"),
             ("PREC", "fp16"), ("PROMPT_DEPTH_VISION", 9), ("PROMPT_DEPTH_TEXT", 9)],
    "VPT": [("N_CTX_VISION", 2), ("CTX_INIT", "a photo of a"), ("PREC", "fp16"),
            ("PROMPT_DEPTH_VISION", 1)],
    "PROMPTSRC": [("N_CTX_VISION", 4), ("N_CTX_TEXT", 4), ("CTX_INIT", "a photo of a"),
                  ("PREC", "fp16"), ("PROMPT_DEPTH_VISION", 9), ("PROMPT_DEPTH_TEXT", 9),
                  ("TEXT_LOSS_WEIGHT", 25), ("IMAGE_LOSS_WEIGHT", 10), ("GPA_MEAN", 15),
                  ("GPA_STD", 1)],
}
FLAVOURS = {
    "CoOp": (["coop", "cocoop", "zsclip"], ["COOP", "COCOOP"]),
    "MaPLe": (["coop", "cocoop", "zsclip", "maple", "independentVL", "vpt"],
              ["COOP", "COCOOP", "MAPLE", "IVLP", "VPT"]),
    "PromptSRC": (["coop", "cocoop", "zsclip", "maple", "independentVL", "promptsrc"],
                  ["COOP", "COCOOP", "IVLP", "MAPLE", "PROMPTSRC"]),
}


def upstream_train_py(flavour: str) -> str:
    modules, nodes = FLAVOURS[flavour]
    lines = []
    for node in nodes:
        lines.append(f"    cfg.TRAINER.{node} = CN()")
        lines += [f"    cfg.TRAINER.{node}.{k} = {v!r}" for k, v in NODES[node]]
    return TRAIN_PY.format(trainer_imports="\n".join(f"import trainers.{m}" for m in modules),
                           extend_cfg="\n".join(lines))


# trainer -> (upstream layout, an override of a key that layout's extend_cfg lacks)
RUNS = {
    "ZeroshotCLIP": ("CoOp", ["TRAINER.ZEROSHOTCLIP.ENSEMBLE", "False"]),
    "CoOp": ("CoOp", ["TRAINER.COOP.TRUNCATE_TEXT", "False"]),
    "CoCoOp": ("CoOp", ["TRAINER.COCOOP.PROMPT_PREC", "fp32"]),
    "MaPLe": ("MaPLe", ["TRAINER.MAPLE.PROMPT_DEPTH", "2", "TRAINER.MAPLE.SHARED_PREFIX", "False"]),
    "VPT": ("MaPLe", ["TRAINER.VPT.N_CTX_VISION", "3"]),
    "IVLP": ("PromptSRC", ["TRAINER.IVLP.CACHE_TEXT", "False"]),
    "PromptSRC": ("PromptSRC", ["TRAINER.PROMPTSRC.GPA_MEAN", "1", "TRAINER.PROMPTSRC.KL_LOSS_WEIGHT",
                                "2"]),
    "MMLoP": ("PromptSRC", ["TRAINER.MMLOP.RANK", "2"]),
}


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("upstream_train_py")
    ckpt = save_tiny_clip(root / "tiny_clip.pt", layers=4)
    for flavour in FLAVOURS:
        (root / flavour).mkdir()
        (root / flavour / "train.py").write_text(upstream_train_py(flavour))
    return root, ckpt


def test_every_registered_trainer_of_ours_has_an_upstream_layout_run():
    ours = {n for n in TRAINER_REGISTRY.registered_names()
            if TRAINER_REGISTRY.get(n).__module__.startswith("trainers.")}
    assert ours == set(RUNS)


@pytest.mark.parametrize("trainer", list(RUNS))
def test_upstream_layout_train_py_runs_our_trainer(tiny_setup, trainer):
    """Our YAML (the trainer's tiny config) and an override of one of our keys, through a
    ``train.py`` whose ``extend_cfg`` replaces our nodes by upstream's (ints for floats too)."""
    from trainers.core.methods import method_info

    root, ckpt = tiny_setup
    flavour, override = RUNS[trainer]
    info = method_info(trainer)
    out = root / "out" / trainer
    cmd = [sys.executable, str(root / flavour / "train.py"), "--root", str(root / "data"),
           "--seed", "1", "--trainer", trainer,
           "--dataset-config-file", str(REPO / "configs" / "datasets" / "synthetic_clean.yaml"),
           "--config-file", info.config_file(info.tiny_config), "--output-dir", str(out),
           *(["--eval-only"] if not info.trains else []),
           "MODEL.BACKBONE.NAME", str(ckpt), "DATASET.NUM_SHOTS", "1",
           "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", "1",
           "DATALOADER.NUM_WORKERS", "0", *override]
    r = subprocess.run(cmd, cwd=REPO, env=_env(PYTHONPATH=str(REPO)), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert f"Loading trainer: {trainer}" in log and "* accuracy:" in log
    assert "Note: the config has no" not in log          # every key known before the merge
    if info.trains:
        assert "Finish training" in log
    key, value = override[-2:]
    node, name = key.split(".")[1:]
    block = re.split(r"\n  (?=\S)", log.split(f"\n  {node}:\n", 1)[1], maxsplit=1)[0]
    assert re.search(rf"^    {name}: {re.escape(value)}(\.0)?$", block, flags=re.M), (node, block)


# ------------------------------------------------------------- weights files through clip._MODELS

UPSTREAM_STYLE_LOADER = '''
import torch
from clip import clip


def load_clip_to_cpu(cfg):
    backbone_name = cfg.MODEL.BACKBONE.NAME
    url = clip._MODELS[backbone_name]
    model_path = clip._download(url)
    try:
        model = torch.jit.load(model_path, map_location="cpu").eval()
        state_dict = None
    except RuntimeError:
        state_dict = torch.load(model_path, map_location="cpu")
    return clip.build_model(state_dict or model.state_dict())
'''


def test_upstream_loader_takes_a_weights_file_path(tmp_path, monkeypatch):
    from clip import clip
    from dassl.config import get_cfg_default

    torch.manual_seed(0)
    model = build_model_from_config("ViT-B/16", **TINY)
    path = tmp_path / "cache" / "ViT-B-16.pt"
    path.parent.mkdir()
    torch.save(model.state_dict(), path)
    namespace: dict = {}
    exec(UPSTREAM_STYLE_LOADER, namespace)
    cfg = get_cfg_default()
    for name in (str(path), "~/cache/ViT-B-16.pt"):
        monkeypatch.setenv("HOME", str(tmp_path))
        cfg.MODEL.BACKBONE.NAME = name
        loaded = namespace["load_clip_to_cpu"](cfg)
        torch.testing.assert_close(loaded.visual.conv1.weight.float(), model.visual.conv1.weight,
                                   rtol=0, atol=1e-3)
    assert clip._download(str(path), root=str(tmp_path / "elsewhere")) == str(path)
    assert not (tmp_path / "elsewhere").exists()                 # nothing downloaded or created
    assert str(path) not in clip._MODELS and str(path) not in clip.available_models()
    with pytest.raises(KeyError, match=r"'ViT-B/99' not found; available models = .*ViT-B/16"):
        clip._MODELS["ViT-B/99"]


# --------------------------------------------------------- name-only override, clash, replaced file

UPSTREAM_STYLE_IVLP = '''
from dassl.engine import TRAINER_REGISTRY, TrainerX


@TRAINER_REGISTRY.register()
class IVLP(TrainerX):
    """The user's upstream independentVL.py (registration only)."""

    def build_model(self):
        raise NotImplementedError("not needed by this test")
'''

PROBE = '''
import json, trainers
from dassl.config import get_cfg_default
from dassl.engine import TRAINER_REGISTRY as R
out = {"conflicts": R.conflicts()}
for name in ("IVLP", "CoOp"):
    try:
        out[name] = R.origin(name).file if name in R.registered_names() else R.get(name)
    except KeyError as e:
        out[name] = "error: " + str(e)
out["nodes"] = sorted(get_cfg_default().TRAINER.keys())
print(json.dumps(out))
'''


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """The packages and train.py of this checkout, copied, so a test may put files into its
    ``trainers/`` folder."""
    copy = tmp_path / "repo"
    for name in ("clip", "dassl", "datasets", "trainers", "configs"):
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "train.py", copy / "train.py")
    return copy


def _run(cwd: Path, args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=_env(PYTHONPATH=str(cwd), **env),
                          capture_output=True, text=True, timeout=300)


def test_name_only_override_picks_the_users_file_that_sorts_first(repo_copy, tmp_path):
    import json

    user = repo_copy / "trainers" / "independentVL.py"         # replaces our alias module
    user.write_text(UPSTREAM_STYLE_IVLP)
    assert sorted(["independentVL.py", "ivlp.py"])[0] == "independentVL.py"
    r = _run(repo_copy, ["-c", PROBE], MMLOP_TRAINER_OVERRIDES="IVLP")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["IVLP"] == str(user) and not out["conflicts"]
    assert "IVLP" in out["nodes"]                # the user's class has none: ours is kept
    assert "note: trainer IVLP comes from trainers/independentVL.py" in r.stderr

    # without the override: the clash, naming the user's file in the advice
    r = _run(repo_copy, ["-c", PROBE])
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert "MMLOP_TRAINER_OVERRIDES=IVLP=" + str(user) in out["IVLP"]

    # two files that are not ours: refused, both listed
    second = tmp_path / "ivlp_mine.py"
    second.write_text(UPSTREAM_STYLE_IVLP)
    r = _run(repo_copy, ["-c", PROBE], MMLOP_TRAINER_OVERRIDES="IVLP", MMLOP_TRAINERS=str(second))
    out = json.loads(r.stdout.strip().splitlines()[-1])
    message = out["IVLP"]
    assert message.startswith("error: ") and "registered by 2 files that are not this project's" in message
    assert "trainers/independentVL.py" in message and str(second) in message


def test_a_clash_gives_the_clash_message_even_with_overrides_of_its_keys(repo_copy, tmp_path):
    user = tmp_path / "coop_upstream.py"
    user.write_text(UPSTREAM_STYLE_IVLP.replace("IVLP", "CoOp"))
    r = _run(repo_copy, ["train.py", "--trainer", "CoOp", "--output-dir", str(tmp_path / "o"),
                         "TRAINER.COOP.N_CTX", "4"], MMLOP_TRAINERS=str(user))
    assert r.returncode == 1
    assert "Non-existent config key" not in r.stderr
    assert 'An object named "CoOp" was registered 2 times' in r.stderr and str(user) in r.stderr


def test_a_replaced_trainer_file_without_keys_says_how_to_get_its_node(repo_copy, tmp_path):
    (repo_copy / "trainers" / "coop.py").write_text(
        textwrap.dedent(UPSTREAM_STYLE_IVLP.replace("IVLP", "CoOp")))
    r = _run(repo_copy, ["train.py", "--trainer", "CoOp", "--output-dir", str(tmp_path / "o"),
                         "TRAINER.COOP.N_CTX", "4"])
    assert r.returncode == 1 and not (tmp_path / "o").exists()
    first = r.stderr.strip().splitlines()[-1]
    assert first.startswith("error: Non-existent config key: TRAINER.COOP.N_CTX")
    assert "run it with that train.py" in first and "add_config(cfg)" in first


def test_promptsrc_template_list_kept_by_replacing_imagenet_templates(repo_copy):
    """Ours exports CLIP's 80 templates as ``IMAGENET_TEMPLATES``; PromptSRC's file of that name
    (60 templates) put in its place is what an upstream file then imports, and none of our
    trainers reads it (PromptSRC's anchors stay our 60-template list)."""
    probe = ("import json, trainers, trainers.imagenet_templates as t, trainers.promptsrc as p; "
             "print(json.dumps([len(t.IMAGENET_TEMPLATES), len(p.IMAGENET_TEMPLATES_60), "
             "p.IMAGENET_TEMPLATES_60[1]]))")
    import json

    r = _run(repo_copy, ["-c", probe])
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [80, 60, "a bad photo of a {}."]
    (repo_copy / "trainers" / "imagenet_templates.py").write_text(
        "IMAGENET_TEMPLATES = ['itap of a {}.'] * 60\n")
    r = _run(repo_copy, ["-c", probe])
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [60, 60, "a bad photo of a {}."]
