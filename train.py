"""Train or evaluate a CoOp-family trainer (Dassl/CoOp command line).

    python train.py --root DATA --trainer CoOp --dataset-config-file configs/datasets/dtd.yaml \
        --config-file configs/trainers/CoOp/vit_b16.yaml --output-dir output/x --seed 1 \
        DATASET.NUM_SHOTS 16

Config merge order: defaults -> trainer extensions -> dataset YAML -> trainer YAML -> flags -> opts.
The merged config is saved as OUTPUT_DIR/config.yaml once the run is allowed (a rerun with other
settings, or --eval-only into another run's folder, is refused before anything is written) and
before the trainer is built; the final
test's results.json records the command line, the git commit and the library versions.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import traceback
from typing import Optional, Sequence

# Only the standard library at import: torch, the datasets and the trainers load inside the
# functions, once the arguments are parsed, so ``--help`` and a mistyped flag answer at once.

CONFIG_FILE = "config.yaml"
DEBUG_ENV = "MMLOP_DEBUG"


COMPAT_GROUP_TITLE = "accepted for compatibility with Dassl, unused here"

EPILOG = (
    "Trailing KEY VALUE pairs (e.g. DATASET.NUM_SHOTS 16 OPTIM.MAX_EPOCH 5) override config keys; "
    "they are merged last, after the YAML files and the flags."
)


def build_parser() -> argparse.ArgumentParser:
    """The upstream flags; everything after them is collected in ``opts`` (KEY VALUE pairs)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EPILOG)
    parser.add_argument("--list-trainers", action="store_true",
                        help="list the registered trainers (what each is, its default configs) and exit")
    parser.add_argument("--eval-untrained", action="store_true",
                        help="with --eval-only and no --model-dir: evaluate the initial (untrained) prompts "
                             "on purpose")
    parser.add_argument("--overwrite", action="store_true",
                        help="with --eval-only: write into an --output-dir that holds another run's record "
                             "(its results.json and config.yaml are replaced)")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of input errors too (also: {DEBUG_ENV}=1)")
    run = parser.add_argument_group(
        "CoOp-family options", "The flags of CoOp's scripts; each given flag overrides the YAML files' key."
    )
    run.add_argument("--root", type=str, default="", help="path to dataset")
    run.add_argument("--output-dir", type=str, default="", help="output directory")
    run.add_argument("--resume", type=str, default="", help="checkpoint directory (from which the training resumes)")
    run.add_argument("--seed", type=int, default=None, help="random seed (>= 0 fixes it; default: the config's SEED)")
    run.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods (INPUT.TRANSFORMS)")
    run.add_argument("--config-file", type=str, default="", help="path to config file")
    run.add_argument("--dataset-config-file", type=str, default="", help="path to config file for dataset setup")
    run.add_argument("--trainer", type=str, default="", help="name of trainer")
    run.add_argument("--backbone", type=str, default="", help="CLIP model name or path (MODEL.BACKBONE.NAME)")
    run.add_argument("--eval-only", action="store_true", help="evaluation only")
    run.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    run.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    run.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    run.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                     help="modify config options using the command-line")
    compat = parser.add_argument_group(
        COMPAT_GROUP_TITLE,
        "Dassl's flags for domain adaptation/generalization and for a classifier head. They are still copied "
        "into the config (DATASET.SOURCE_DOMAINS, DATASET.TARGET_DOMAINS, MODEL.HEAD.NAME; the domains are "
        "listed in the dataset summary), but no trainer or dataset in this repository reads them.",
    )
    compat.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    compat.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    compat.add_argument("--head", type=str, default="", help="name of head (MODEL.HEAD.NAME)")
    return parser


def register_datasets_and_trainers() -> None:
    """Import the datasets and the trainers, which register themselves. A torchvision built for
    another torch stops here with one message naming the fix, instead of failing inside torchvision."""
    from dassl.utils.env import torchvision_problem

    problem = torchvision_problem()
    if problem:
        sys.exit(f"error: {problem}")
    import datasets  # noqa: F401
    import trainers  # noqa: F401


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
    cfg = default_cfg()
    if args.dataset_config_file:
        cfg.merge_from_file(args.dataset_config_file)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    reset_cfg(cfg, args)
    cfg.merge_from_list(args.opts or [])
    cfg.freeze()
    return cfg


def print_args(args: argparse.Namespace, cfg, logger=None) -> None:
    """Dassl's arguments and config dump; with a log file it goes there only (upstream users diff
    it), and the terminal gets one line pointing to it."""
    lines = ["***************", "** Arguments **", "***************"]
    lines += [f"{key}: {args.__dict__[key]}" for key in sorted(args.__dict__)]
    lines += ["************", "** Config **", "************", str(cfg)]
    text = "\n".join(lines) + "\n"
    if logger is None:
        print(text, end="")
        return
    logger.log_only(text)
    logger.console.write(f"Arguments and config: in {logger.fpath} (merged config: "
                         f"{os.path.join(cfg.OUTPUT_DIR, CONFIG_FILE)})\n")


def prepare_output_dir(path: str) -> None:
    """Create ``path``; ``OutputDirError`` saying why not and what to do."""
    from dassl.utils import OutputDirError

    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as exc:
        raise OutputDirError(f"Cannot use the output directory {path}: {exc.strerror or exc}. Choose another "
                             "--output-dir (OUTPUT for the scripts) on a writable file system") from None


def check_eval_only(args: argparse.Namespace, cfg, trainer=None) -> None:
    """``--eval-only`` of a trainer that learns needs the weights to evaluate (``--model-dir``).
    Checked before anything is loaded when the trainer states ``trains`` (this project's), else
    once it is built: by whether it registered trainable parameters (upstream's zero-shot trainer
    registers none)."""
    if not args.eval_only or args.model_dir or args.eval_untrained:
        return
    from dassl.engine import TRAINER_REGISTRY
    from dassl.engine.results import count_trainable_params
    from dassl.utils import UserError

    register_datasets_and_trainers()
    name = cfg.TRAINER.NAME
    if trainer is None:
        trains = getattr(TRAINER_REGISTRY.get(name), "trains", None) if name in TRAINER_REGISTRY else None
    else:
        trains = count_trainable_params(m for m in trainer._models.values() if m is not None) > 0
    if trains:
        raise UserError(f"--eval-only without --model-dir would evaluate {name}'s untrained prompts: give "
                        "--model-dir (the training run's output folder) and --load-epoch, or add "
                        "--eval-untrained to evaluate the initial prompts on purpose")


def check_eval_output(args: argparse.Namespace, cfg) -> None:
    """``--eval-only`` into a folder that holds another run's record (a training run's checkpoints,
    or a ``config.yaml`` of other settings) would replace its ``results.json`` and ``config.yaml``:
    refused unless ``--overwrite``. Rerunning the same evaluation into its own folder is allowed."""
    out = cfg.OUTPUT_DIR
    if not args.eval_only or args.overwrite or not out:
        return
    from dassl.engine.resume import checkpoint_names
    from dassl.utils import UserError

    config_path = os.path.join(out, CONFIG_FILE)
    if checkpoint_names(out):
        what = "the checkpoints of a training run"
    elif os.path.isfile(config_path) and open(config_path).read() != cfg.dump():
        what = f"{config_path} of a run with other settings"
    else:
        return
    raise UserError(f"--output-dir {out} holds {what}: evaluating into it would replace its results.json and "
                    "config.yaml. Choose another --output-dir, or add --overwrite to replace them")


def default_cfg():
    """The config with every key at its default (what a key that an older checkpoint lacks is
    compared against)."""
    register_datasets_and_trainers()
    import trainers
    from dassl.config import get_cfg_default

    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    return cfg


def write_config(cfg) -> str | None:
    """Write ``cfg.dump()`` to ``OUTPUT_DIR/config.yaml`` atomically; return its path (None: no OUTPUT_DIR)."""
    if not cfg.OUTPUT_DIR:
        return None
    from dassl.utils.tools import atomic_write

    fpath = os.path.join(cfg.OUTPUT_DIR, CONFIG_FILE)
    text = cfg.dump()

    def _write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(fpath, _write)
    return fpath


def format_command(argv: Sequence[str], prog: str = "train.py") -> str:
    """The shell-quoted command line ``python PROG ARGV...`` (recorded in results.json)."""
    return shlex.join(["python", prog, *argv])


def main(args: argparse.Namespace, command_line: str | None = None):
    """Run ``train.py`` in-process; returns the trainer (after training or evaluation).

    ``command_line`` (see :func:`format_command`) is recorded in ``results.json``.
    """
    import torch

    from dassl.engine import build_trainer
    from dassl.engine.config_checks import check_config
    from dassl.engine.results import provenance
    from dassl.engine.resume import check_before_writing
    from dassl.engine.run_guard import OutputLock, remove_temp_files
    from dassl.threads import fit_threads
    from dassl.utils import collect_env_info, set_random_seed, setup_logger

    cfg = setup_cfg(args)
    check_config(cfg)
    check_eval_only(args, cfg)
    logger = lock = None
    removed: list[str] = []
    try:
        if cfg.OUTPUT_DIR:
            prepare_output_dir(cfg.OUTPUT_DIR)
            lock = OutputLock(cfg.OUTPUT_DIR).acquire()
        # Before anything is written, so that a refused run leaves the folder as it was.
        check_eval_output(args, cfg)
        if not args.eval_only:
            check_before_writing(cfg, default_cfg())
        if cfg.OUTPUT_DIR:
            removed = remove_temp_files(cfg.OUTPUT_DIR)
        if cfg.SEED >= 0:
            set_random_seed(cfg.SEED)
        logger = setup_logger(cfg.OUTPUT_DIR)
        for path in removed:
            print(f"Removed a temporary file left by an interrupted save: {path}")
        # Once the run is allowed, before the trainer is built (a run that fails later still has it).
        write_config(cfg)
        provenance()  # git commit and versions of the code as loaded now (cached for results.json)
        if cfg.SEED >= 0:
            print(f"Setting fixed seed: {cfg.SEED}")
        if torch.cuda.is_available() and cfg.USE_CUDA:
            torch.backends.cudnn.benchmark = True
        print_args(args, cfg, logger)
        print("Collecting env info ...")
        print(f"** System info **\n{collect_env_info()}\n")
        fit_threads(cfg.DATALOADER.NUM_WORKERS)

        trainer = build_trainer(cfg)
        check_eval_only(args, cfg, trainer)
        trainer.command_line = command_line
        if args.eval_only:
            trainer.load_model(args.model_dir, epoch=args.load_epoch)
            if trainer.eval_epoch is None:
                trainer.eval_epoch = args.load_epoch
            trainer.test()
            return trainer
        if not args.no_train:
            trainer.train()
        return trainer
    except BaseException as exc:
        if logger is not None:
            logger.log_only(failure_report(exc, debug=args.debug))
        raise
    finally:
        if logger is not None:
            logger.close()
        if lock is not None:
            lock.release()


def debugging(args: argparse.Namespace) -> bool:
    return args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def is_user_error(exc: BaseException) -> bool:
    """An error the user can fix from its message alone (see ``dassl.utils.errors``)."""
    from clip.clip import DownloadError
    from dassl.utils import UserError

    if isinstance(exc, (UserError, DownloadError)):
        return True
    message = str(exc)
    return isinstance(exc, (FileNotFoundError, ValueError)) and (
        message.startswith("Config file not found") or "do you mean" in message)


def failure_report(exc: BaseException, debug: bool = False) -> str:
    """What ``log.txt`` records of a failed run: the message, and the traceback unless it is an
    input error (then only under ``--debug``)."""
    if isinstance(exc, KeyboardInterrupt):
        return "Interrupted (Ctrl-C)\n"
    if is_user_error(exc) and not debug:
        return f"error: {exc}\n"
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python train.py``: one clear message (exit code 1) for bad config input."""
    if argv is None:
        argv, prog = sys.argv[1:], sys.argv[0]
    else:
        prog = "train.py"
    args = build_parser().parse_args(argv)
    if args.list_trainers:
        register_datasets_and_trainers()
        from trainers.core.methods import format_methods, registered_methods

        print(format_methods(registered_methods()))
        return 0
    args.debug = debugging(args)
    try:
        main(args, command_line=format_command(argv, prog))
    except KeyboardInterrupt:
        print("\nInterrupted. Checkpoints are written atomically, so nothing was saved half-way; rerun the "
              "same command to resume from the last finished epoch.", file=sys.stderr)
        return 130
    except Exception as exc:
        if not is_user_error(exc) or args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
