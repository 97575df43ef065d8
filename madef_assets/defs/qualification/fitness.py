"""The fitness verdict: in plain words, whether the SFT set and the scores may be trusted, computed from the
same gates the graph applies (each role's qualification against human labels; each LLM step's refusal,
failure and copy rates against the profile's limits). Plain functions, no Dagster."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from madef_assets.defs.copies import is_copy_error
from madef_assets.defs.intent.taxonomy import CATEGORIES
from madef_assets.defs.qualification.agreement import gate_report
from madef_assets.defs.qualification.metrics import agreement_report
from madef_assets.settings import MethodConfig, QualificationConfig

# The LLM steps whose rows feed the SFT set, by the role that answers them.
ROLE_ASSETS = {
    "intent_labels": "labeler",
    "augmented_prompts": "attacker",
    "safe_responses": "responder",
    "response_safety_scores": "judge",
    "instruction_safety_scores": "judge",
    "prompt_perplexity": "scorer",
}


@dataclass(frozen=True)
class Criterion:
    """One thing the verdict rests on: what it is, whether it holds, and the sentence that says so."""

    name: str
    passed: bool
    words: str


def qualification_verdict(
    report: dict, min_kappa: float, max_uncertain_rate: float, role: str = "judge", unit: str = "human-labeled answers"
) -> tuple[bool, str]:
    """Whether a role qualifies from its agreement report, in words: κ with its interval, n, the reason."""
    kappa, (low, high) = report["kappa"], report["kappa_ci"]
    problems = []
    if kappa < min_kappa:
        problems.append(f"κ below {min_kappa}")
    if report["unparsed_rate"] > max_uncertain_rate:
        problems.append(f"uncertain rate {report['unparsed_rate']:.2f} above {max_uncertain_rate}")
    words = f"{role} κ = {kappa:.2f} [{low:.2f}, {high:.2f}] on {report['n']} {unit}"
    return not problems, words + (" — qualified" if not problems else f" — not qualified ({'; '.join(problems)})")


def judge_verdict(judge_qualification: pl.DataFrame, config: QualificationConfig) -> tuple[bool, str]:
    """The judge's verdict recomputed from judge_qualification's rows (the gate's task: refusal, or harmfulness
    for a judge without a refusal reading) with the same code, seed and resamples as its gate, so every place
    that prints it prints the same."""
    report = gate_report(judge_qualification, config)
    if report is None:
        return False, "judge not measured against human labels (no refusal- or harmfulness-task rows)"
    return qualification_verdict(report, config.min_kappa, config.max_uncertain_rate)


def labeler_verdict(labeler_qualification: pl.DataFrame, config: QualificationConfig) -> tuple[bool, str]:
    """The labeler's verdict recomputed from labeler_qualification's rows (all languages), as its gate computes it."""
    if not labeler_qualification.height:
        return False, "labeler not measured against the sources' categories (no rows)"
    report = agreement_report(
        labeler_qualification["gold_category"].to_list(),
        labeler_qualification["predicted_category"].to_list(),
        CATEGORIES,
        None,
        config.n_resamples,
        config.seed,
    )
    return qualification_verdict(
        report, config.labeler_min_kappa, config.labeler_max_uncertain_rate, "labeler", "categorised prompts"
    )


def role_criteria(asset: str, table: pl.DataFrame, method: MethodConfig) -> list[Criterion]:
    """The refusal rate and the failure rate (unparseable, failed or copied answers) of one LLM step
    against the profile's gate limits, with the number of copies named apart."""
    role, rows = ROLE_ASSETS[asset], table.height
    statuses, errors = table["status"], table["error"] if "error" in table.columns else pl.Series([None] * rows)
    refused = int((statuses == "refused").sum())
    failed = int(((statuses != "ok") & (statuses != "refused")).sum())
    copies = sum(map(is_copy_error, errors.to_list()))

    def rate(count: int) -> float:
        return count / rows if rows else 0.0

    copy_words = f", {copies} of them copies" if copies else ""
    return [
        Criterion(
            f"{role} refusals ({asset})",
            rate(refused) <= method.max_refusal_rate,
            f"{role} refused {refused} of {rows} ({rate(refused):.1%}; limit {method.max_refusal_rate:.0%}) in {asset}",
        ),
        Criterion(
            f"{role} failures ({asset})",
            rate(failed) <= method.max_parse_failure_rate,
            f"{role} failed or was unparseable on {failed} of {rows} ({rate(failed):.1%}{copy_words}; "
            f"limit {method.max_parse_failure_rate:.0%}) in {asset}",
        ),
    ]


def fitness_verdict(criteria: list[Criterion]) -> str:
    """One sentence: "fit for training" when every criterion holds, else "not fit for training: " and the
    failed ones, qualification first."""
    failed = [c.words for c in criteria if not c.passed]
    if not failed:
        return "fit for training: every role qualified against human labels and every LLM step within its limits"
    return "not fit for training: " + "; ".join(failed)


def fitness_markdown(criteria: list[Criterion]) -> str:
    """The verdict followed by every criterion, passed or not, as a list."""
    lines = [f"**{fitness_verdict(criteria)}**", ""]
    lines += [f"- {'✅' if c.passed else '❌'} {c.words}" for c in criteria]
    return "\n".join(lines)
