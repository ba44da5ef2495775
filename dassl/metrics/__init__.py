"""Metrics used inside ``forward_backward`` (``compute_accuracy``)."""
from .accuracy import compute_accuracy
