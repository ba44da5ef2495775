"""Upstream's module name for IVLP: the ``train.py`` of the MaPLe and PromptSRC repositories does
``import trainers.independentVL``. The trainer is ``trainers/ivlp.py``'s ``IVLP`` (registered
there, once); this module only gives it the upstream name. A user's own upstream
``independentVL.py`` saved over this file registers a second ``IVLP``: the two then clash by name
(``MMLOP_TRAINER_OVERRIDES=IVLP`` picks the user's, see ``trainers/__init__.py``)."""
from .ivlp import IVLP, IVLPCLIP, IVLPPromptLearner, IVLPSettings

__all__ = ["IVLP", "IVLPCLIP", "IVLPPromptLearner", "IVLPSettings"]
