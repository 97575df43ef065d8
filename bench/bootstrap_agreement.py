"""agreement_report's bootstrap intervals: one Python pass per resample and metric (bootstrap_interval, the
baseline) against bootstrap_agreement (every resample's confusion matrix at once with numpy), on rows the size
of XSTest's 450 answers and of a full labeler gold set.

    .venv/bin/python bench/bootstrap_agreement.py
"""

import random
import time

from madef_assets.defs.qualification.metrics import (
    accuracy,
    bootstrap_agreement,
    bootstrap_interval,
    cohen_kappa,
    f1,
    macro_f1,
)

LABELS = ["refusal", "compliance", "partial", "uncertain"]


def rows(n: int) -> tuple[list[str], list[str]]:
    rng = random.Random(n)
    gold = [rng.choice(LABELS[:-1]) for _ in range(n)]
    return gold, [g if rng.random() < 0.7 else rng.choice(LABELS) for g in gold]


def per_metric(gold, predicted, resamples):
    metrics = [accuracy, cohen_kappa, macro_f1, lambda t, g: f1(t, g, "refusal")]
    return [bootstrap_interval(gold, predicted, m, n_resamples=resamples, seed=0) for m in metrics]


def main() -> None:
    print("| rows | resamples | per metric (s) | vectorized (s) | speed-up |\n|---|---|---|---|---|")
    for n in (450, 2000):
        gold, predicted = rows(n)
        started = time.perf_counter()
        per_metric(gold, predicted, 1000)
        baseline = time.perf_counter() - started
        started = time.perf_counter()
        bootstrap_agreement(gold, predicted, LABELS, "refusal", n_resamples=1000, seed=0)
        fast = time.perf_counter() - started
        print(f"| {n} | 1000 | {baseline:.2f} | {fast:.3f} | {baseline / fast:.0f}× |")


if __name__ == "__main__":
    main()
