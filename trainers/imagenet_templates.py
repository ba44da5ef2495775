"""CLIP's ImageNet prompt templates under the module name upstream trainer files import
(``from trainers.imagenet_templates import IMAGENET_TEMPLATES, IMAGENET_TEMPLATES_SELECT``, e.g.
CoOp's ``zsclip.py``); the data lives in ``trainers/core/templates.py``."""
from .core.templates import IMAGENET_TEMPLATES, IMAGENET_TEMPLATES_SELECT

__all__ = ["IMAGENET_TEMPLATES", "IMAGENET_TEMPLATES_SELECT"]
