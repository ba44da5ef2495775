"""The prompted-CLIP core shared by every method in ``trainers/`` (docs/ADDING_A_METHOD.md).

Modules, in the order a training step uses them:

==============  =================================================================================
``trainer``     ``PromptTrainer`` (method facts, config hooks, backbone loading, optimizer,
                checkpoints of the prompts only) and ``CrossEntropyPromptTrainer``
``checks``      config checks run before any data or model is loaded
``shared_keys`` the config keys every prompt trainer shares (precision, exact speed-ups)
``backbone``    loading and freezing CLIP; widths and depths the prompts must fit
``precision``   what ``PREC`` means on a device (weight dtype, autocast, gradient scaling)
``context``     ``CTX_INIT`` -> prompt text and initial embeddings; random prompt init
``text_inputs`` ``ClassPrompts``: the tokenized "<prefix> <classname>." of every class
``model``       ``PromptedCLIP``: frozen CLIP + a prompt learner; text features, image features,
                the per-evaluation text-feature cache
``encoders``    the text and image towers run layer by layer with per-layer prompts
``templates``   zero-shot templates (per dataset, ImageNet ensembles)
``anchors``     frozen zero-shot text features of a template ensemble, cached per class set
``losses``      the consistency (anchor) losses and the uniform drift correction
``gpa``         Gaussian prompt aggregation, resumable
``methods``     the registered methods and their facts (scripts, tables, ``--list-trainers``)
``config_value`` one config value as ``train.py`` sees it (the sweep's load epochs, read_cfg.py)
==============  =================================================================================
"""
from .context import TextContext, context_parameter, normal_prompt, text_context
from .model import PromptedCLIP
from .precision import Precision
from .trainer import CrossEntropyPromptTrainer, PromptTrainer

__all__ = ["CrossEntropyPromptTrainer", "Precision", "PromptTrainer", "PromptedCLIP",
           "TextContext", "context_parameter", "normal_prompt", "text_context"]
