"""Agreement metrics for qualifying a judge or the labeler against gold labels: plain functions, no Dagster.

Every function takes two equally long sequences of labels, `gold` first (the reference) and `predicted`
second (the rater under test), paired by position. Empty or unequal inputs raise ValueError: a metric of
no rows is undefined and a silent 0 or 1 would pass for a measurement.

Sources of the formulas:
- Cohen's kappa: J. Cohen, "A coefficient of agreement for nominal scales", Educational and
  Psychological Measurement 20(1), 1960.
- Wilson score interval: E. B. Wilson, "Probable inference, the law of succession, and statistical
  inference", JASA 22(158), 1927.
- Percentile bootstrap: B. Efron, "Bootstrap methods: another look at the jackknife", Annals of
  Statistics 7(1), 1979; B. Efron & R. Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from madef_assets.defs.verdicts import UNCERTAIN

Metric = Callable[[Sequence[Hashable], Sequence[Hashable]], float]


def _check_pairs(gold: Sequence[Hashable], predicted: Sequence[Hashable]) -> int:
    if len(gold) != len(predicted):
        raise ValueError(f"gold has {len(gold)} labels but predicted has {len(predicted)}")
    if not gold:
        raise ValueError("no labels: the metric is undefined on zero rows")
    return len(gold)


def confusion(gold: Sequence[Hashable], predicted: Sequence[Hashable], labels: Sequence[Hashable]) -> list[list[int]]:
    """Counts in `labels` order: `matrix[i][j]` is the number of rows with gold `labels[i]` predicted as
    `labels[j]` (rows: gold, columns: predicted). A label outside `labels` raises ValueError."""
    _check_pairs(gold, predicted)
    position = {label: index for index, label in enumerate(labels)}
    if len(position) != len(labels):
        raise ValueError(f"labels repeat a value: {list(labels)}")
    matrix = [[0] * len(labels) for _ in labels]
    for row, (truth, guess) in enumerate(zip(gold, predicted, strict=True)):
        for side, value in (("gold", truth), ("predicted", guess)):
            if value not in position:
                raise ValueError(f"{side} label {value!r} at position {row} is not one of {list(labels)}")
        matrix[position[truth]][position[guess]] += 1
    return matrix


def accuracy(gold: Sequence[Hashable], predicted: Sequence[Hashable]) -> float:
    """Observed agreement: the share of rows where predicted equals gold."""
    n = _check_pairs(gold, predicted)
    return sum(truth == guess for truth, guess in zip(gold, predicted, strict=True)) / n


def cohen_kappa(gold: Sequence[Hashable], predicted: Sequence[Hashable]) -> float:
    """Cohen's (1960) kappa, for any number of classes: (p_o - p_e) / (1 - p_e), with p_o the observed
    agreement and p_e = sum over labels k of p_gold(k) * p_predicted(k), the agreement expected by chance
    from the two raters' marginal label frequencies.

    Degenerate case: when p_e = 1 (both raters give one and the same label to every row) the ratio is
    0/0; this returns 1.0 when the observed agreement is 1 and 0.0 otherwise."""
    n = _check_pairs(gold, predicted)
    observed = accuracy(gold, predicted)
    gold_counts, predicted_counts = Counter(gold), Counter(predicted)
    expected = sum(count * predicted_counts[label] for label, count in gold_counts.items()) / (n * n)
    if math.isclose(expected, 1.0):
        return 1.0 if math.isclose(observed, 1.0) else 0.0
    return (observed - expected) / (1.0 - expected)


def f1(gold: Sequence[Hashable], predicted: Sequence[Hashable], positive: Hashable) -> float:
    """F1 of the `positive` class: 2·TP / (2·TP + FP + FN), the harmonic mean of precision and recall.
    When neither side has a positive row (2·TP + FP + FN = 0) F1 is undefined; this returns 0.0, as
    scikit-learn's `f1_score(zero_division=0)` does."""
    _check_pairs(gold, predicted)
    true_pos = false_pos = false_neg = 0
    for truth, guess in zip(gold, predicted, strict=True):
        if guess == positive:
            if truth == positive:
                true_pos += 1
            else:
                false_pos += 1
        elif truth == positive:
            false_neg += 1
    denominator = 2 * true_pos + false_pos + false_neg
    return 2 * true_pos / denominator if denominator else 0.0


def macro_f1(gold: Sequence[Hashable], predicted: Sequence[Hashable]) -> float:
    """The unweighted mean of every class's F1 (each class in turn the positive one), over the classes
    that occur in gold or predicted except "uncertain" (a rater's non-answer, never a gold class: its F1
    would be 0 by construction). As scikit-learn's `f1_score(average="macro")` over those labels."""
    _check_pairs(gold, predicted)
    true_pos: Counter = Counter()
    false_pos: Counter = Counter()
    false_neg: Counter = Counter()
    for truth, guess in zip(gold, predicted, strict=True):
        if truth == guess:
            true_pos[truth] += 1
        else:
            false_pos[guess] += 1
            false_neg[truth] += 1
    classes = (set(gold) | set(predicted)) - {UNCERTAIN}
    if not classes:
        return 0.0
    return sum(2 * true_pos[c] / (2 * true_pos[c] + false_pos[c] + false_neg[c]) for c in classes) / len(classes)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson (1927) score interval for a proportion successes/n:
    (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), clipped to [0, 1] against rounding.
    n = 0 carries no information and returns (0.0, 1.0)."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    scale = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half_width = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / scale
    return (max(0.0, centre - half_width), min(1.0, centre + half_width))


def bootstrap_interval(
    gold: Sequence[Hashable],
    predicted: Sequence[Hashable],
    metric: Metric,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Efron's percentile bootstrap interval of `metric(gold, predicted)`: draw `n_resamples` samples of
    n rows with replacement, keeping each gold label paired with its prediction, compute the metric on
    each and return the (1-level)/2 and (1+level)/2 quantiles (numpy's default linear interpolation).
    The draws come from `numpy.random.default_rng(seed)`, so the same inputs and seed give the same
    interval; the same n and seed also draw the same row indices, whichever metric is asked."""
    n = _check_pairs(gold, predicted)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    gold_rows, predicted_rows = list(gold), list(predicted)
    draws = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    values = np.array(
        [metric([gold_rows[i] for i in rows], [predicted_rows[i] for i in rows]) for rows in draws.tolist()]
    )
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return (float(low), float(high))


def bootstrap_agreement(
    gold: Sequence[Hashable],
    predicted: Sequence[Hashable],
    labels: Sequence[Hashable],
    positive: Hashable | None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """`bootstrap_interval` of accuracy, cohen_kappa, f1 (of `positive`, when given) and macro_f1 at once,
    on the same resamples (the same draws as bootstrap_interval's for this n and seed), computed from each
    resample's confusion matrix with numpy instead of one Python pass per resample and metric: the same
    formulas, degenerate cases included, at a small fraction of the time."""
    n = _check_pairs(gold, predicted)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    position = {label: index for index, label in enumerate(labels)}
    k = len(labels)
    codes = np.array([position[t] * k + position[g] for t, g in zip(gold, predicted, strict=True)])
    draws = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    offsets = np.arange(n_resamples)[:, None] * (k * k)
    matrices = np.bincount((codes[draws] + offsets).ravel(), minlength=n_resamples * k * k).reshape(-1, k, k)
    true_pos = np.diagonal(matrices, axis1=1, axis2=2)
    gold_counts, predicted_counts = matrices.sum(axis=2), matrices.sum(axis=1)
    observed = true_pos.sum(axis=1) / n
    expected = (gold_counts * predicted_counts).sum(axis=1) / (n * n)
    degenerate = np.isclose(expected, 1.0, rtol=1e-9, atol=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(
            degenerate,
            np.where(np.isclose(observed, 1.0, rtol=1e-9, atol=0.0), 1.0, 0.0),
            (observed - expected) / (1.0 - expected),
        )
        denominators = gold_counts + predicted_counts  # 2·TP + FP + FN per class
        per_class = np.where(denominators > 0, 2 * true_pos / np.where(denominators > 0, denominators, 1), 0.0)
    counted = (denominators > 0) & np.array([label != UNCERTAIN for label in labels])
    classes = counted.sum(axis=1)
    macro = np.where(classes > 0, (per_class * counted).sum(axis=1) / np.maximum(classes, 1), 0.0)
    values = {"accuracy": observed, "kappa": kappa, "macro_f1": macro}
    if positive is not None:
        values["f1"] = per_class[:, position[positive]]
    quantiles = [(1 - level) / 2, (1 + level) / 2]
    return {name: tuple(float(q) for q in np.quantile(v, quantiles)) for name, v in values.items()}


def agreement_report(
    gold: Sequence[Hashable],
    predicted: Sequence[Hashable | None],
    labels: Sequence[Hashable],
    positive: Hashable | None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """How well `predicted` agrees with `gold` over the classes `labels`, with 95 % intervals.

    Unparsed predictions (None or "uncertain") are kept as a class of their own, "uncertain", appended
    to the labels: they count against the rater (a wrong answer in accuracy, kappa and F1, never a
    dropped row), and their share is reported apart as `unparsed_rate` with its Wilson interval. Gold
    must be one of `labels`; any other predicted value raises ValueError, so callers map their raters'
    outputs first.

    Returns n, labels (the confusion's order), accuracy, kappa, f1 (of `positive`; None when `positive`
    is None, for many classes none of which is "the" positive one) and macro_f1, each with a
    percentile-bootstrap interval (`accuracy_ci`, `kappa_ci`, `f1_ci`, `macro_f1_ci`; same seed, hence
    the same resamples for all), the confusion matrix (rows gold, columns predicted), `unparsed` (count),
    `unparsed_rate` and `unparsed_rate_ci`."""
    n = _check_pairs(gold, predicted)
    report_labels = list(labels) if UNCERTAIN in labels else [*labels, UNCERTAIN]
    if positive is not None and (positive not in labels or positive == UNCERTAIN):
        raise ValueError(f"positive class {positive!r} is not one of {list(labels)}")
    for row, truth in enumerate(gold):
        if truth == UNCERTAIN or truth not in labels:
            raise ValueError(f"gold label {truth!r} at position {row} is not one of {list(labels)}")
    rated = [UNCERTAIN if guess is None else guess for guess in predicted]
    matrix = confusion(gold, rated, report_labels)  # first, so an unknown predicted label fails fast
    unparsed = sum(guess == UNCERTAIN for guess in rated)

    intervals = bootstrap_agreement(gold, rated, report_labels, positive, n_resamples, seed)
    return {
        "n": n,
        "labels": report_labels,
        "accuracy": accuracy(gold, rated),
        "accuracy_ci": intervals["accuracy"],
        "kappa": cohen_kappa(gold, rated),
        "kappa_ci": intervals["kappa"],
        "f1": None if positive is None else f1(gold, rated, positive),
        "f1_ci": intervals.get("f1"),
        "macro_f1": macro_f1(gold, rated),
        "macro_f1_ci": intervals["macro_f1"],
        "confusion": matrix,
        "unparsed": unparsed,
        "unparsed_rate": unparsed / n,
        "unparsed_rate_ci": wilson_interval(unparsed, n),
    }
