"""OpenAI-compatible CLIP: ``clip.load``, ``clip.tokenize``, ``clip.available_models``,
``clip.build_model``; modules ``clip.clip``, ``clip.model``, ``clip.simple_tokenizer``.

Model files are cached in ``$CLIP_CACHE_DIR`` (default ``~/.cache/clip``); see ``clip.clip``.
open_clip models load as the same ``CLIP`` with ``clip.load("open_clip:<model>:<tag or file>")``
(``clip.open_clip_models``; ``python -m clip.models`` lists the supported ones).
"""
from . import model, simple_tokenizer
from .clip import *  # noqa: F401,F403  (available_models, load, tokenize, build_model, ...)
from .clip import __all__ as _clip_all

__all__ = list(_clip_all)
