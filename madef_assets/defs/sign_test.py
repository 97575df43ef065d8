"""The exact sign test, shared by the stages that compare paired outcomes."""

from __future__ import annotations

from math import comb


def exact_sign_test(first: int, second: int) -> float:
    """Two-sided exact sign test of `first` against `second` wins: under no difference each goes either way
    with probability 1/2, so p = 2 · P(Binomial(first + second, 1/2) ≤ min(first, second)), capped at 1;
    no decided pair: 1. On the discordant pairs of paired binary outcomes it is McNemar's exact test."""
    decided = first + second
    if decided == 0:
        return 1.0
    tail = sum(comb(decided, k) for k in range(min(first, second) + 1))
    return min(1.0, 2 * tail / 2**decided)
