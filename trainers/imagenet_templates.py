"""CLIP's ImageNet prompt templates under the module name upstream trainer files import
(``from trainers.imagenet_templates import IMAGENET_TEMPLATES, IMAGENET_TEMPLATES_SELECT``, e.g.
CoOp's ``zsclip.py``); the data lives in ``trainers/core/templates.py``.

``IMAGENET_TEMPLATES`` is CLIP's full list of 80, as in the CoOp and MaPLe repositories. The
PromptSRC repository's file of the same name holds its 60-template subset under that name, so a
PromptSRC trainer file dropped in here would anchor to 80 templates: keep upstream's list by
putting PromptSRC's ``imagenet_templates.py`` in place of this one (no trainer of this project
imports this module; ours read ``trainers/core/templates.py``), or import
``IMAGENET_TEMPLATES_60`` (docs/UPSTREAM.md)."""
from .core.templates import IMAGENET_TEMPLATES, IMAGENET_TEMPLATES_60, IMAGENET_TEMPLATES_SELECT

__all__ = ["IMAGENET_TEMPLATES", "IMAGENET_TEMPLATES_60", "IMAGENET_TEMPLATES_SELECT"]
