"""Train or evaluate a CoOp-family trainer (Dassl/CoOp command line).

    python train.py --root DATA --trainer CoOp --dataset-config-file configs/datasets/dtd.yaml \
        --config-file configs/trainers/CoOp/vit_b16.yaml --output-dir output/x --seed 1 \
        DATASET.NUM_SHOTS 16

Config merge order: defaults -> trainer extensions -> dataset YAML -> trainer YAML -> flags -> opts.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch

import datasets  # noqa: F401  (registers the datasets)
import trainers
from dassl.config import get_cfg_default
from dassl.engine import build_trainer
from dassl.utils import collect_env_info, set_random_seed, setup_logger


def build_parser() -> argparse.ArgumentParser:
    """The upstream flags; everything after them is collected in ``opts`` (KEY VALUE pairs)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=str, default="", help="path to dataset")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="", help="checkpoint directory (from which the training resumes)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (>= 0 fixes it; default: the config's SEED)")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="path to config file")
    parser.add_argument("--dataset-config-file", type=str, default="", help="path to config file for dataset setup")
    parser.add_argument("--trainer", type=str, default="", help="name of trainer")
    parser.add_argument("--backbone", type=str, default="", help="name of CNN backbone")
    parser.add_argument("--head", type=str, default="", help="name of head")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    parser.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="modify config options using the command-line")
    return parser


def reset_cfg(cfg, args: argparse.Namespace) -> None:
    """Copy the flags that were given into ``cfg`` (``--seed 0`` counts; an absent ``--seed`` does not)."""
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed is not None:
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head


def setup_cfg(args: argparse.Namespace):
    """Build the frozen config from defaults, trainer extensions, the two YAML files, flags and opts."""
    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    if args.dataset_config_file:
        cfg.merge_from_file(args.dataset_config_file)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    reset_cfg(cfg, args)
    cfg.merge_from_list(args.opts or [])
    cfg.freeze()
    return cfg


def print_args(args: argparse.Namespace, cfg) -> None:
    print("***************")
    print("** Arguments **")
    print("***************")
    for key in sorted(args.__dict__):
        print(f"{key}: {args.__dict__[key]}")
    print("************")
    print("** Config **")
    print("************")
    print(cfg)


def main(args: argparse.Namespace):
    """Run ``train.py`` in-process; returns the trainer (after training or evaluation)."""
    cfg = setup_cfg(args)
    logger = None
    try:
        if cfg.SEED >= 0:
            set_random_seed(cfg.SEED)
        logger = setup_logger(cfg.OUTPUT_DIR)
        if cfg.SEED >= 0:
            print(f"Setting fixed seed: {cfg.SEED}")
        if torch.cuda.is_available() and cfg.USE_CUDA:
            torch.backends.cudnn.benchmark = True
        print_args(args, cfg)
        print("Collecting env info ...")
        print(f"** System info **\n{collect_env_info()}\n")

        trainer = build_trainer(cfg)
        if args.eval_only:
            trainer.load_model(args.model_dir, epoch=args.load_epoch)
            if trainer.eval_epoch is None:
                trainer.eval_epoch = args.load_epoch
            trainer.test()
            return trainer
        if not args.no_train:
            trainer.train()
        return trainer
    finally:
        if logger is not None:
            logger.close()


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python train.py``: one clear message (exit code 1) for bad config input."""
    args = build_parser().parse_args(argv)
    try:
        main(args)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        if not _is_config_error(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _is_config_error(exc: BaseException) -> bool:
    from dassl.config import ConfigError

    if isinstance(exc, ConfigError):
        return True
    message = str(exc)
    return message.startswith("Config file not found") or "do you mean" in message


if __name__ == "__main__":
    sys.exit(cli())
