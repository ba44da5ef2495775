"""OpenAI-compatible CLIP (model only for now; load/tokenize follow)."""
from . import model
from .model import build_model
