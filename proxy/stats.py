"""Seed statistics of the proxy tables: mean with a Student-t confidence interval, and paired
differences.

For ``n`` per-seed values ``x_1..x_n`` (n >= 2) the interval is

    mean ± t_{(1+c)/2, n-1} · s / sqrt(n),   s = sqrt(sum (x_i - mean)^2 / (n - 1)),

with ``c`` the confidence (0.95: ``t_{0.975, 2} = 4.303`` for 3 seeds). A paired difference of
method A and method B runs the same seeds on the same datasets: ``d_i = a_i - b_i`` per seed, and
the interval above is taken over the ``d_i``; the gap is "inside the noise" when that interval
contains 0. Seeds are the only source of variation counted (the test images and the tiny CLIP are
fixed), so the intervals say how far another set of seeds could move a number, not how the methods
compare on other data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

CONFIDENCE = 0.95


def student_t_two_sided(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with ``df`` (integer >= 1) degrees of freedom.

    Exact finite series in ``theta = atan(t / sqrt(df))`` (odd and even ``df``).
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if t <= 0:
        return 0.0
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, 1.0
        if df > 1:
            total = term = math.cos(theta)
            for k in range(3, df - 1, 2):        # cos^k terms with factor (k-1)/k
                term *= c2 * (k - 1) / k
                total += term
        return (2.0 / math.pi) * (theta + math.sin(theta) * total)
    total = term = 1.0
    for k in range(2, df - 1, 2):                # cos^k terms with factor (k-1)/k
        term *= c2 * (k - 1) / k
        total += term
    return math.sin(theta) * total


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The ``t`` with ``P(|T| <= t) = confidence`` (e.g. 4.3027 for df 2 at 0.95); bisection."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    lo, hi = 0.0, 1.0
    while student_t_two_sided(hi, df) < confidence:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_two_sided(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    """``mean ± half`` over ``n`` values; ``half`` is ``None`` with fewer than 2 values."""

    mean: float
    half: Optional[float]
    n: int

    @property
    def low(self) -> Optional[float]:
        return None if self.half is None else self.mean - self.half

    @property
    def high(self) -> Optional[float]:
        return None if self.half is None else self.mean + self.half

    def contains_zero(self) -> Optional[bool]:
        """Whether 0 lies in the interval (``None`` without an interval)."""
        return None if self.half is None else self.low <= 0.0 <= self.high

    def format(self, digits: int = 2, signed: bool = False, mark: bool = False) -> str:
        """``"59.21 ± 1.30"``; ``signed``: ``"+1.20 ± 0.90"``; ``mark``: a ``*`` after an interval
        that excludes 0."""
        text = f"{self.mean:+.{digits}f}" if signed else f"{self.mean:.{digits}f}"
        if self.half is not None:
            text += f" ± {self.half:.{digits}f}"
            if mark and not self.contains_zero():
                text += "*"
        return text


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE, centre: Optional[float] = None) -> Interval:
    """Mean of ``values`` with the Student-t half-width (module docstring). ``centre`` replaces the
    mean as the interval's centre (the base-to-novel HM column: HM of the mean base and novel
    accuracies, with the half-width of the per-seed HMs)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values")
    n = len(values)
    mean = math.fsum(values) / n
    half = None
    if n >= 2:
        s = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
        half = t_quantile(n - 1, confidence) * s / math.sqrt(n)
    return Interval(mean if centre is None else centre, half, n)


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and interval of ``a_i - b_i`` (same seeds, same order)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same length, got {len(a)} and {len(b)}")
    return mean_ci([x - y for x, y in zip(a, b)], confidence)
