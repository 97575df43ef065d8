"""Paired significance (defs/evaluation/significance.py) on hand-computed cases: McNemar's exact test
(McNemar 1947; the exact binomial form), Fisher's sign-flip test and a paired bootstrap for means, Holm's
step-down correction (Holm 1979), and
the report's deltas marked by them, never by overlapping intervals."""

from math import comb

import polars as pl
import pytest

from madef_assets.defs.evaluation.intervals import compare_with_intervals, with_wilson
from madef_assets.defs.evaluation.new_safety import decided_judgements
from madef_assets.defs.evaluation.report import marked_regressions
from madef_assets.defs.evaluation.significance import (
    OUTCOME_SCHEMA,
    delta_note,
    holm,
    mcnemar_exact,
    paired_bootstrap_p,
    paired_tests,
    sign_flip_p,
)


def test_mcnemar_exact_on_hand_computed_cases():
    # 16 pairs only the tuned model got right, 2 only the base: 2 * (C(18,0)+C(18,1)+C(18,2)) / 2^18 = 344/262144.
    assert mcnemar_exact(2, 16) == pytest.approx(344 / 2**18) and round(mcnemar_exact(2, 16), 5) == 0.00131
    assert mcnemar_exact(16, 2) == mcnemar_exact(2, 16)  # two-sided
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0  # capped at 1; no discordant pair
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # five discordant pairs, all one way: p = 0.0625
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (comb(10, 0) + comb(10, 1)) / 2**10)


def binary_outcomes(base: list[int], tuned: list[int], view="v", row="OFF") -> pl.DataFrame:
    items = [f"i{k}" for k in range(len(base))]
    return pl.DataFrame(
        {
            "view": view,
            "row": row,
            "candidate": ["base"] * len(base) + ["tuned"] * len(tuned),
            "item": items + items,
            "outcome": [float(x) for x in base + tuned],
            "binary": True,
        },
        schema=OUTCOME_SCHEMA,
    )


def the_issues_case() -> pl.DataFrame:
    """56/100 vs 70/100 on the same items with 16:2 discordant pairs (54 both right, 28 both wrong)."""
    base = [1] * 54 + [0] * 28 + [1] * 2 + [0] * 16
    tuned = [1] * 54 + [0] * 28 + [0] * 2 + [1] * 16
    assert (sum(base), sum(tuned)) == (56, 70)
    return binary_outcomes(base, tuned)


def test_the_issues_case_is_significant_although_the_intervals_overlap():
    tests = paired_tests(the_issues_case(), "base")
    test = tests.row(0, named=True)
    assert (test["test"], test["pairs"], test["baseline_only"], test["candidate_only"]) == ("McNemar exact", 100, 2, 16)
    assert test["p_value"] == pytest.approx(0.0013123, rel=1e-4) and test["significant"]
    scores = with_wilson(
        pl.DataFrame({"candidate": ["base", "tuned"], "row": ["OFF", "OFF"], "safe": [56, 70], "n": [100, 100]}),
        "safe",
        "n",
    ).with_columns(rate=pl.col("safe").cast(pl.Float64))
    base_ci, tuned_ci = scores.select("ci_low", "ci_high").rows()
    assert base_ci[1] > tuned_ci[0]  # Wilson intervals overlap: the old rule printed "(n.s.)" here
    table = compare_with_intervals(scores, "row", "rate", "n", ["base", "tuned"], {("OFF", "tuned"): test})
    assert table["Δ tuned"][0] == "+14.00 (p=0.001, Holm p=0.001, 100 pairs)"


def test_paired_bootstrap_is_seeded_and_sees_a_consistent_shift():
    shifted = [1.0, 2.0, 1.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0, 1.0] * 3
    p = paired_bootstrap_p(shifted, seed=1)
    assert p == paired_bootstrap_p(shifted, seed=1) and p == pytest.approx(1 / 10_001)
    noisy = [3.0, -3.0, 2.0, -2.0, 1.0, -1.0, 0.5] * 3
    assert paired_bootstrap_p(noisy, seed=1) > 0.5
    assert paired_bootstrap_p([1.0, -1.0] * 10) == 1.0  # a zero mean difference tests nothing


def test_a_few_pairs_are_tested_exactly_by_flipping_signs():
    """Fisher's sign-flip test: with n pairs all of one sign, p = 2 / 2^n (both all-positive and all-negative
    patterns are as extreme), never the bootstrap's 1/(B+1) on a handful of values."""
    assert sign_flip_p([1.0, 2.0, 1.0, 3.0, 2.0]) == pytest.approx(2 / 32)
    assert paired_bootstrap_p([1.0, 2.0]) == pytest.approx(2 / 4) and paired_bootstrap_p([2.0]) == 1.0
    # [3, -1]: the patterns (3, -1), (-3, 1) have |mean| 1, (3, 1), (-3, -1) 2: p = 4/4
    assert sign_flip_p([3.0, -1.0]) == 1.0
    # [4, 1, 1]: |mean| 2 only unflipped or all flipped; one 1 flipped gives 4/3, both 2/3: p = 2/8
    assert sign_flip_p([4.0, 1.0, 1.0]) == pytest.approx(2 / 8)
    assert paired_bootstrap_p([1.0, 2.0, 1.0, 3.0, 2.0]) == sign_flip_p([1.0, 2.0, 1.0, 3.0, 2.0])


def test_holm_on_a_hand_computed_case():
    # Sorted 0.01, 0.02, 0.03, 0.04 times 4, 3, 2, 1 = 0.04, 0.06, 0.06, 0.04; made non-decreasing: 0.04, 0.06,
    # 0.06, 0.06.
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and holm([]) == []


def test_holm_across_the_report_can_turn_a_lone_p_into_noise():
    """p = 0.0625 * ... : a delta significant alone is not once twenty comparisons share the report."""
    frames = [binary_outcomes([0] * 7 + [1] * 3, [1] * 7 + [1] * 3, row="OFF")]  # 7:0 discordant, p = 2/128
    frames += [binary_outcomes([1] * 10, [1] * 10, row=f"C{k}") for k in range(19)]  # nothing changed
    tests = paired_tests(pl.concat(frames), "base")
    off = tests.filter(pl.col("row") == "OFF").row(0, named=True)
    assert off["p_value"] == pytest.approx(2 / 128) and off["p_holm"] == pytest.approx(20 * 2 / 128)
    assert not off["significant"] and delta_note(off).startswith("n.s.: p=0.016, Holm p=0.312")
    alone = paired_tests(frames[0], "base").row(0, named=True)
    assert alone["significant"]


def test_only_items_both_candidates_have_are_paired_and_means_use_the_bootstrap():
    outcomes = pl.DataFrame(
        {
            "view": "responsibility",
            "row": "law",
            "candidate": ["base"] * 4 + ["tuned"] * 4,
            "item": ["a", "b", "c", "d", "a", "b", "c", "e"],
            "outcome": [5.0, 6.0, None, 4.0, 8.0, 9.0, 7.0, 9.0],
            "binary": False,
        },
        schema=OUTCOME_SCHEMA,
    )
    test = paired_tests(outcomes, "base").row(0, named=True)
    # a and b are the pairs: c has no base score, d no tuned answer, e no base answer.
    assert (test["test"], test["pairs"], test["difference"]) == ("sign-flip exact", 2, 3.0)


def test_a_regression_counts_only_when_its_paired_test_is_significant():
    scores = pl.DataFrame(
        {"candidate": ["base", "tuned", "base", "tuned"], "category": ["OFF", "OFF", "UB", "UB"], "r": [70.0, 56.0] * 2}
    )
    tests = paired_tests(
        pl.concat(
            [
                binary_outcomes([1] * 54 + [1] * 16 + [0] * 2 + [0] * 28, [1] * 54 + [0] * 16 + [1] * 2 + [0] * 28),
                binary_outcomes([1] * 56 + [1] * 14 + [0] * 30, [1] * 56 + [0] * 14 + [0] * 30, row="UB"),
            ]
        ),
        "base",
    )
    by_key = {(t["row"], t["candidate"]): t for t in tests.iter_rows(named=True)}
    regressions = marked_regressions(scores, "category", "r", ["base", "tuned"], by_key)
    assert [significant for _, significant in regressions] == [True, True]
    untested = marked_regressions(scores, "category", "r", ["base", "tuned"], {})
    assert untested == [("OFF (tuned -14.00, untested)", False), ("UB (tuned -14.00, untested)", False)]


# --- each benchmark's outcomes read the items as its scores count them --------------------------------------


def report_with(inputs: dict[str, pl.DataFrame]):
    from madef_assets.defs.evaluation.benchmark import Report
    from madef_assets.settings import load_settings

    return Report(load_settings("demo", env={}), inputs, ["base", "tuned"], None, "")


def view_of(benchmark: str):
    from madef_assets.defs.evaluation.benchmark import registered

    return next(spec for spec in registered() if spec.name == benchmark).report[0]


def rates_from(outcomes: pl.DataFrame, view: str) -> dict[tuple[str, str], float]:
    means = outcomes.filter(pl.col("view") == view).group_by("row", "candidate").agg(pl.col("outcome").mean())
    return {(r, c): round(100 * m, 2) for r, c, m in means.iter_rows()}


DECISIONS = pl.DataFrame(
    {"review_key": ["k2", "k5"], "decision": ["safe", "refusal"], "reviewer": "r", "note": None, "decided_at": "t"}
)


def test_new_safety_and_over_refusal_outcomes_count_as_their_scores():
    from madef_assets.defs.evaluation.over_refusal import decided_answers
    from madef_assets.storage import run_sql

    judgements = pl.DataFrame(
        {
            "candidate": ["base", "base", "base", "tuned", "tuned", "tuned"],
            "view": ["headline"] * 6,
            "category": ["OFF", "OFF", "UB", "OFF", "OFF", "UB"],
            "prompt_id": ["a", "b", "c", "a", "b", "c"],
            "judge_label": ["safe", "uncertain", "unsafe", "uncertain", "safe", "safe"],
            "review_key": ["k1", "k2", "k3", "k4", "k5", "k6"],
        }
    )
    inputs = {"new_safety_judgements": judgements, "review_decisions": DECISIONS}
    outcomes = view_of("new_safety").outcomes(report_with(inputs))
    scores = run_sql("evaluation/new_safety_scores", decided=decided_judgements(judgements, DECISIONS))
    assert rates_from(outcomes, "new_safety") == {
        (r, c): v for r, c, v in scores.select("category", "candidate", "safe_rate").iter_rows()
    }
    over = judgements.with_columns(
        type=pl.col("category"),
        prompt_label=pl.Series(["safe", "safe", "unsafe"] * 2),
        final_label=pl.Series(["compliance", "uncertain", "partial", "refusal", "partial", "compliance"]),
    )
    inputs = {"over_refusal_judgements": over, "review_decisions": DECISIONS}
    outcomes = view_of("over_refusal").outcomes(report_with(inputs))
    scores = view_of("over_refusal").rows(
        None, run_sql("evaluation/over_refusal_scores", decided=decided_answers(over, DECISIONS))
    )
    assert rates_from(outcomes, "over_refusal") == {
        (r, c): v for r, c, v in scores.select("item", "candidate", "rate").iter_rows()
    }


def test_safetybench_general_and_responsibility_outcomes_count_as_their_scores():
    from madef_assets.defs.evaluation import safetybench
    from madef_assets.defs.evaluation.cvalues import RULE_SETS
    from madef_assets.defs.evaluation.responsibility import mcq_rule_set_scores

    predictions = pl.DataFrame(
        {
            "candidate": ["base"] * 3 + ["tuned"] * 3,
            "mode": "generate",
            "lang": ["zh", "zh", "en"] * 2,
            "source": ["sb_zh", "sb_zh", "sb_en"] * 2,
            "id": ["1", "2", "1"] * 2,
            "category": ["Offensiveness", "Offensiveness", "Illegal Activities"] * 2,
            "abbreviation": ["OFF", "OFF", "IA"] * 2,
            "answer_index": [0, 1, 2] * 2,
            "predicted_index": [0, None, 1, 0, 1, 2],
            "extraction": "rule",
        }
    ).with_columns(correct=(pl.col("predicted_index") == pl.col("answer_index")).fill_null(False))
    outcomes = view_of("safetybench").outcomes(report_with({"safetybench_predictions": predictions}))
    scores = [
        {"candidate": c, **row}
        for c, group in predictions.group_by("candidate")
        for row in safetybench.language_scores(group)
    ]
    expected = {
        (f"{s['lang']} {safetybench.report_label(s['category'])}", s["candidate"][0]): round(s["score"], 2)
        for s in scores
    }
    assert rates_from(outcomes, "safetybench") == expected
    general = pl.DataFrame(
        {
            "candidate": ["base", "base", "tuned", "tuned"],
            "benchmark": "gsm8k",
            "subject": "math",
            "item_id": [1, 2, 1, 2],
            "correct": [True, False, True, True],
        }
    )
    outcomes = view_of("general").outcomes(report_with({"general_capability_predictions": general}))
    assert rates_from(outcomes, "general") == {("gsm8k", "base"): 50.0, ("gsm8k", "tuned"): 100.0}
    judgements = pl.DataFrame(
        {"candidate": ["base", "tuned"], "domain": "law", "prompt_id": ["p", "p"], "score": [4, None]},
        schema_overrides={"score": pl.Int64},
    )
    choices = {f"choice_{rs}": ["need_check", "回复2" if rs == "moss" else "need_check"] for rs in RULE_SETS}
    mcq = pl.DataFrame(
        {
            "candidate": ["base", "tuned"],
            "domain": "law",
            "prompt_id": ["m", "m"],
            "label": "回复1",
            "choice": ["need_check", "need_check"],
            **choices,
            "review_key": ["k7", "k8"],
        }
    )
    decisions = pl.DataFrame({"review_key": ["k7"], "decision": ["回复1"]})
    inputs = {"responsibility_judgements": judgements, "responsibility_mcq_predictions": mcq}
    outcomes = view_of("responsibility").outcomes(report_with({**inputs, "review_decisions": decisions}))
    rule_sets = mcq_rule_set_scores(mcq, decisions)
    per_rule_set = {(f"law · {rs}", c): v for c, rs, v in rule_sets.select("candidate", "rule_set", "acc").iter_rows()}
    averages = {("law · average", "base"): 100.0, ("law · average", "tuned"): 0.0}
    assert rates_from(outcomes, "responsibility mcq") == {**per_rule_set, **averages}
    means = outcomes.filter(pl.col("view") == "responsibility").drop_nulls("outcome")
    assert means.select("candidate", "outcome").rows() == [("base", 4.0)]  # an unscored answer has no outcome


def test_a_drop_in_the_table_that_the_pairs_show_as_a_gain_is_no_regression():
    """Responsibility's mean leaves unscored answers out of each candidate's own mean: the table can go down
    while the items both answered went up. Only a paired difference below zero counts as a regression."""
    base = [5.0] * 10 + [10.0] * 10
    tuned = [6.0] * 10 + [None] * 10
    items = [f"i{k}" for k in range(20)]
    outcomes = pl.DataFrame(
        {
            "view": "responsibility",
            "row": "law",
            "candidate": ["base"] * 20 + ["tuned"] * 20,
            "item": items + items,
            "outcome": base + tuned,
            "binary": False,
        },
        schema=OUTCOME_SCHEMA,
    )
    test = paired_tests(outcomes, "base").row(0, named=True)
    assert test["significant"] and test["difference"] == 1.0
    scores = pl.DataFrame({"candidate": ["base", "tuned"], "domain": ["law", "law"], "mean": [7.5, 6.0]})
    regressions = marked_regressions(scores, "domain", "mean", ["base", "tuned"], {("law", "tuned"): test})
    assert regressions == [(regressions[0][0], False)] and regressions[0][0].startswith("law (tuned -1.50, p=")


def test_deltas_are_against_the_reports_baseline_only():
    frame = pl.DataFrame({"candidate": ["tuned", "other"], "row": ["OFF", "OFF"], "rate": [50.0, 60.0], "n": [2, 2]})
    table = compare_with_intervals(frame, "row", "rate", "n", ["base", "tuned", "other"])
    assert table["Δ other"].to_list() == [None]  # no base row: no delta against another candidate
