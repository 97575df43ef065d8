"""Group `qualification`: the judge measured against human labels before its scores are used."""

import hashlib
import json

import polars as pl
from dagster import (AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext, AssetKey, DataVersion, Output,
                     asset)

from madef_assets.defs.qualification.fitness import qualification_verdict
from madef_assets.defs.qualification.gold import xstest_human_labels
from madef_assets.defs.qualification.metrics import agreement_report
from madef_assets.defs.qualification.tasks import REFUSAL, TASKS, UNCERTAIN, reference_raters, sample_gold, task_rows
from madef_assets.llm.resource import LLMResource
from madef_assets.prompts import family_version, template
from madef_assets.settings import Settings

GROUP = "qualification"
POOL = "duckdb"
JUDGE_QUALIFIED = "judge_qualified"
JUDGE_RATER = "judge (this profile's)"
JUDGEMENT_SCHEMA = {"task": pl.Utf8, "model": pl.Utf8, "id": pl.Int64, "type": pl.Utf8, "prompt_label": pl.Utf8,
                    "gold": pl.Utf8, "judge_label": pl.Utf8, "judge_status": pl.Utf8, "judge_raw_output": pl.Utf8}


def interval(value: float, bounds: tuple[float, float]) -> str:
    return f"{value:.3f} [{bounds[0]:.3f}, {bounds[1]:.3f}]"


def agreement_table(reports: dict[str, dict[str, dict]]) -> str:
    """One markdown table: per task, the judge's row among the reference raters'."""
    lines = ["| task | rater | n | accuracy | Cohen's κ | F1 (positive) | uncertain |", "|---|---|---|---|---|---|---|"]
    for task, raters in reports.items():
        for rater, r in raters.items():
            lines.append(f"| {task} | {rater} | {r['n']} | {interval(r['accuracy'], r['accuracy_ci'])} | "
                         f"{interval(r['kappa'], r['kappa_ci'])} | {interval(r['f1'], r['f1_ci'])} | {r['unparsed_rate']:.3f} |")
    return "\n".join(lines)


def build_qualification_assets(settings: Settings) -> list:
    config = settings.qualification

    @asset(group_name=GROUP, kinds={"duckdb", "llm"}, pool=POOL, check_specs=[AssetCheckSpec(
        JUDGE_QUALIFIED, asset=AssetKey("judge_qualification"), blocking=True,
        description="The judge's Cohen's κ against XSTest's human labels (refusal task) reaches qualification.min_kappa "
                    "and its unparsed share stays under max_uncertain_rate; qualification.gate: warn only reports.")])
    def judge_qualification(context: AssetExecutionContext, judge: LLMResource):
        """The judge labels human-labeled answers with the prompts and parsers it uses in the pipeline, through
        the ledger: refusal vs compliance vs partial on XSTest's answers (gold: the human final label), and
        response harmfulness on its unsafe prompts (the New-Safety judge prompt; a full compliance is unsafe).
        Beside it, from the same files and the same metric code: human annotator 2 vs 1, GPT-4's labels and
        XSTest's string matcher. Accuracy, Cohen's κ, F1, the confusion and 95 % bootstrap intervals."""
        labels = sample_gold(xstest_human_labels(config.gold_dir), config.per_model, config.seed)
        frames, reports, metadata = [], {}, {}
        for task in TASKS:
            rows, excluded = task_rows(task, labels)
            batch = judge.generate([template(task.template, "en").render(prompt=r["prompt"], response=r["completion"])
                                    for r in rows.iter_rows(named=True)], family_version(task.template), log=context.log,
                                   refusals=True)
            predicted = [task.parse(r.output) if r.status == "ok" else UNCERTAIN for r in batch.results]
            reports[task.name] = {JUDGE_RATER: agreement_report(rows["gold"].to_list(), predicted, task.labels, task.positive,
                                                                config.n_resamples, config.seed)}
            for rater, (gold, rated) in reference_raters(task, rows).items():
                reports[task.name][rater] = agreement_report(gold, rated, task.labels, task.positive, config.n_resamples, config.seed)
            frames.append(rows.select("model", "id", "type", "prompt_label", "gold").with_columns(
                task=pl.lit(task.name), judge_label=pl.Series(predicted, dtype=pl.Utf8),
                judge_status=pl.Series([r.status for r in batch.results], dtype=pl.Utf8),
                judge_raw_output=pl.Series([r.output if isinstance(r.output, str) else None for r in batch.results], dtype=pl.Utf8)))
            metadata[f"{task.name}_excluded_rows"] = excluded
            metadata[f"{task.name}_judge_confusion"] = {"labels": reports[task.name][JUDGE_RATER]["labels"],
                                                        "rows_gold_columns_judge": reports[task.name][JUDGE_RATER]["confusion"]}
            metadata.update({f"{task.name}_{k}": v for k, v in batch.metadata().items()})
        table = pl.concat(frames, how="diagonal_relaxed").select(list(JUDGEMENT_SCHEMA)).cast(JUDGEMENT_SCHEMA)
        qualified, words = qualification_verdict(reports[REFUSAL.name][JUDGE_RATER], config.min_kappa, config.max_uncertain_rate)
        # Data version: the judge's labels and the verdict (the same after a re-run from the ledger).
        version = hashlib.sha256(json.dumps([judge.model, words, table.rows()], default=str).encode()).hexdigest()
        yield Output(table, data_version=DataVersion(version), metadata={**metadata, "judge_model": judge.model, "verdict": words, "qualified": qualified,
                                      "agreement": agreement_table(reports), "gold_rows": labels.height})
        refusal = reports[REFUSAL.name][JUDGE_RATER]
        yield AssetCheckResult(
            check_name=JUDGE_QUALIFIED, passed=qualified,
            severity=AssetCheckSeverity.ERROR if config.gate == "block" else AssetCheckSeverity.WARN,
            description=words + (f" (gate: warn — {config.gate_reason})" if config.gate == "warn" else ""),
            metadata={"kappa": round(refusal["kappa"], 4), "kappa_ci": [round(v, 4) for v in refusal["kappa_ci"]],
                      "uncertain_rate": round(refusal["unparsed_rate"], 4), "n": refusal["n"], "min_kappa": config.min_kappa,
                      "max_uncertain_rate": config.max_uncertain_rate, "gate": config.gate})

    return [judge_qualification]
