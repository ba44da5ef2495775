"""Evaluators (``Classification``) and ``build_evaluator``."""
from .build import build_evaluator
from .evaluator import EVALUATOR_REGISTRY, Classification, EvaluatorBase
