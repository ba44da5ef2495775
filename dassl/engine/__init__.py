"""Trainers: ``TRAINER_REGISTRY``, ``build_trainer`` and the ``TrainerBase`` hierarchy."""
from .build import TRAINER_REGISTRY, build_trainer
from .trainer import SimpleTrainer, TrainerBase, TrainerX
