"""CoOp's prompt layouts, ZeroshotCLIP's templates, precision fall-back, and the CoOp / MMLoP /
ZeroshotCLIP trainers through train.py on the synthetic dataset with a tiny CLIP file
(prompt-only checkpoints, loading onto other classes, GPA, clear errors)."""
from __future__ import annotations

import json
import os

import pytest
import torch

import clip
from clip.model import build_model_from_config
from trainers.coop import CoOpCLIP
from trainers.core.precision import resolve_precision
from trainers.core.templates import IMAGENET_TEMPLATES_60, dataset_template

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(vision_layers=2, transformer_layers=2, vision_width=64, transformer_width=64,
            transformer_heads=1, image_resolution=32, vision_patch_size=8, embed_dim=32)


def _tiny():
    torch.manual_seed(0)
    return build_model_from_config("ViT-B/16", **TINY).eval()


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_coop_layouts(position):
    model = CoOpCLIP(_tiny(), ["red circle", "blue"], n_ctx=4, position=position)
    ctx = model.prompt_learner.ctx
    with torch.no_grad():
        got = model.prompt_learner.assemble(model.class_prompts.inputs(False),
                                            model.class_prompts.name_lens)
        emb = model.clip_model.token_embedding
        for i, name in enumerate(["red circle", "blue"]):
            n = len(clip.tokenize(name)[0].nonzero()) - 2
            name_emb = emb(clip.tokenize(name)[0, 1:1 + n])
            tail = emb(clip.tokenize(".")[0, 1:])[: 77 - 1 - 4 - n]
            pieces = {"end": [ctx, name_emb], "front": [name_emb, ctx],
                      "middle": [ctx[:2], name_emb, ctx[2:]]}[position]
            expected = torch.cat([emb(torch.tensor([49406])), *pieces, tail])
            torch.testing.assert_close(got[i], expected)


def test_coop_speedups_are_exact_for_class_specific_middle_context():
    model = CoOpCLIP(_tiny(), ["red circle", "blue square", "a green star"], n_ctx=4, csc=True,
                     position="middle")
    assert tuple(model.prompt_learner.ctx.shape) == (3, 4, 64)
    images = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        model.truncate_text, model.text_cache.enabled = False, False
        plain = model(images)
        model.truncate_text, model.text_cache.enabled = True, True
        fast, _again = model(images), model(images)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-5)
    assert model.text_cache.hits == 1


def test_templates_and_precision_fallback(capsys):
    assert dataset_template("SyntheticShapes") == "a photo of a {}."
    assert dataset_template("DescribableTextures") == "{} texture."
    assert IMAGENET_TEMPLATES_60[:3] == ("a photo of a {}.", "a bad photo of a {}.",
                                         "a photo of many {}.")
    assert IMAGENET_TEMPLATES_60[-1] == "itap of the {}." and len(set(IMAGENET_TEMPLATES_60)) == 60
    p = resolve_precision("bf16", "cpu", key="TRAINER.MMLOP.PREC")
    assert p.weight_dtype == torch.float32 and p.autocast_dtype is None
    assert "TRAINER.MMLOP.PREC bf16 is not supported on cpu; using fp32" in capsys.readouterr().out
    with pytest.raises(ValueError, match="TRAINER.COOP.PREC must be one of"):
        resolve_precision("half", "cpu", key="TRAINER.COOP.PREC")


def _dataset_yaml() -> str:
    for stem in ("synthetic_shapes", "synthetic_clean"):
        path = os.path.join(REPO, "configs", "datasets", f"{stem}.yaml")
        if os.path.isfile(path):
            return path
    pytest.skip("no synthetic dataset config in this checkout")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import train

    root = tmp_path_factory.mktemp("trainers")
    ckpt = root / "tiny.pt"
    torch.save(_tiny().state_dict(), ckpt)
    dataset_yaml = _dataset_yaml()

    def _run(trainer, cfg, out, *flags, opts=()):
        args = train.build_parser().parse_args([
            "--root", str(root / "data"), "--seed", "1", "--trainer", trainer,
            "--dataset-config-file", dataset_yaml,
            "--config-file", os.path.join(REPO, "configs", "trainers", trainer, f"{cfg}.yaml"),
            "--output-dir", str(root / out), *flags,
            "MODEL.BACKBONE.NAME", str(ckpt), "INPUT.SIZE", "(32, 32)",
            "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "1",
            "DATALOADER.TEST.BATCH_SIZE", "500", *opts])
        trainer_obj = train.main(args)
        log = open(root / out / "log.txt").read()
        results = json.load(open(root / out / "results.json")) \
            if os.path.isfile(root / out / "results.json") else None
        return trainer_obj, log, results

    _run.root = root
    return _run


@pytest.mark.slow
def test_zeroshot_clip_eval_only(run):
    _, log, results = run("ZeroshotCLIP", "vit_b16", "zs", "--eval-only",
                          opts=("DATASET.SUBSAMPLE_CLASSES", "new"))
    assert "Prompts: ['a photo of a " in log and "Number of trainable parameters: 0" in log
    assert results["num_trainable_params"] == 0 and results["num_classes"] == 50


@pytest.mark.slow
def test_coop_then_load_errors_on_another_trainer(run):
    trainer, log, results = run("CoOp", "vit_b16_c4_ep10_batch1_ctxv1", "coop",
                                opts=("OPTIM.MAX_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE",
                                      "16", "DATASET.SUBSAMPLE_CLASSES", "base"))
    assert "Number of trainable parameters: 256" in log          # 4 tokens x width 64
    ckpt = torch.load(run.root / "coop" / "prompt_learner" / "model.pth.tar-1",
                      map_location="cpu", weights_only=True)
    assert list(ckpt["state_dict"]) == ["ctx"] and results["num_trainable_params"] == 256

    mmlop, _, _ = run("MMLoP", "vit_b16_c2_ep30_batch4_4+4ctx", "mmlop_gpa",
                      opts=("OPTIM.MAX_EPOCH", "2", "DATALOADER.TRAIN_X.BATCH_SIZE", "25",
                            "TRAINER.MMLOP.PROMPT_DEPTH", "2", "TRAINER.MMLOP.GPA", "True",
                            "TRAINER.MMLOP.GPA_MEAN", "1.0", "DATASET.SUBSAMPLE_CLASSES", "new"))
    log = open(run.root / "mmlop_gpa" / "log.txt").read()
    assert "GPA: loaded the Gaussian-weighted average of 2 epochs" in log
    # the final test ran 2 batches of 500 images: text features computed once, reused once
    assert (mmlop.model.text_cache.misses, mmlop.model.text_cache.hits) == (1, 1)
    with pytest.raises(KeyError, match="lacks the prompt parameters"):
        mmlop.load_model(str(run.root / "coop"), epoch=1)
    with pytest.raises(FileNotFoundError, match="model.pth.tar-9"):
        mmlop.load_model(str(run.root / "mmlop_gpa"), epoch=9)
