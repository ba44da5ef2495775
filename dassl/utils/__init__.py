"""Utilities with Dassl's names: files, JSON, logging to log.txt, seeding, meters, checkpoints."""
from .env import collect_env_info
from .errors import (
    CheckpointMismatchError,
    ModelNotFoundError,
    NonFiniteLossError,
    OutputDirError,
    OutputLockedError,
    ResumeMismatchError,
    UserError,
)
from .logger import Logger, setup_logger
from .meters import AverageMeter, MetricMeter
from .registry import Registry, check_availability
from .tools import (
    ImageReadError,
    check_isfile,
    listdir_nohidden,
    mkdir_if_missing,
    read_image,
    read_json,
    set_random_seed,
    tolist_if_not,
    write_json,
)
from .torchtools import (
    LegacyCheckpointError,
    count_num_param,
    load_checkpoint,
    load_pretrained_weights,
    resume_from_checkpoint,
    save_checkpoint,
)
