"""Group `qualification`: the judge measured against human labels before its scores are used."""

import hashlib
import json
from collections.abc import Sequence

import polars as pl
from dagster import (AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext, AssetKey, DataVersion, Output,
                     asset)

from madef_assets.defs.qualification.fitness import qualification_verdict
from madef_assets.defs.qualification.gold import pku_saferlhf_pairs, xstest_human_labels
from madef_assets.defs.qualification.metrics import agreement_report
from madef_assets.defs.qualification.tasks import (REFUSAL, TASKS, UNCERTAIN, GoldSets, Task, reference_raters,
                                                   sample_gold, sample_pairs)
from madef_assets.llm.resource import LLMBatch, LLMResource
from madef_assets.prompts import family_version
from madef_assets.settings import Settings

GROUP = "qualification"
POOL = "duckdb"
JUDGE_QUALIFIED = "judge_qualified"
JUDGE_RATER = "judge (this profile's)"
# One row per judged gold row; columns a task's gold does not have are null (model, type and prompt_label
# are XSTest's; response and shown_first PKU-SafeRLHF's; id is XSTest's prompt id or the PKU pair's row).
JUDGEMENT_SCHEMA = {"task": pl.Utf8, "gold_set": pl.Utf8, "model": pl.Utf8, "id": pl.Int64, "type": pl.Utf8,
                    "prompt_label": pl.Utf8, "response": pl.Utf8, "shown_first": pl.Utf8, "gold": pl.Utf8,
                    "judge_label": pl.Utf8, "judge_status": pl.Utf8, "judge_raw_output": pl.Utf8}


def interval(value: float, bounds: tuple[float, float]) -> str:
    return f"{value:.3f} [{bounds[0]:.3f}, {bounds[1]:.3f}]"


def agreement_table(tasks: Sequence[Task], reports: dict[str, dict[str, dict]]) -> str:
    """One markdown table: per task, the gold it is measured on and the judge's row among the reference
    raters'; F1 is that of the task's positive class, named in its own column."""
    lines = ["| task | gold | rater | n | accuracy | Cohen's κ | positive | F1 (positive) | uncertain |",
             "|---|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        for rater, r in reports[task.name].items():
            lines.append(f"| {task.name} | {task.gold_set} | {rater} | {r['n']} | "
                         f"{interval(r['accuracy'], r['accuracy_ci'])} | {interval(r['kappa'], r['kappa_ci'])} | "
                         f"{task.positive} | {interval(r['f1'], r['f1_ci'])} | {r['unparsed_rate']:.3f} |")
    return "\n".join(lines)


def judged_rows(task: Task, rows: pl.DataFrame, batch: LLMBatch) -> tuple[list[str], pl.DataFrame]:
    """The judge's labels of a task's rows (unanswered: uncertain) and its rows of the judgement table."""
    predicted = [task.read(result.output, row) if result.status == "ok" else UNCERTAIN
                 for result, row in zip(batch.results, rows.iter_rows(named=True), strict=True)]
    raw_outputs = [r.output if isinstance(r.output, str) else None for r in batch.results]
    table = rows.with_columns(
        task=pl.lit(task.name), gold_set=pl.lit(task.gold_set), judge_label=pl.Series(predicted, dtype=pl.Utf8),
        judge_status=pl.Series([r.status for r in batch.results], dtype=pl.Utf8),
        judge_raw_output=pl.Series(raw_outputs, dtype=pl.Utf8))
    missing = [pl.lit(None, dtype=dtype).alias(column) for column, dtype in JUDGEMENT_SCHEMA.items()
               if column not in table.columns]
    return predicted, table.with_columns(missing).select(list(JUDGEMENT_SCHEMA)).cast(JUDGEMENT_SCHEMA)


def build_qualification_assets(settings: Settings) -> list:
    config = settings.qualification

    @asset(group_name=GROUP, kinds={"duckdb", "llm"}, pool=POOL, check_specs=[AssetCheckSpec(
        JUDGE_QUALIFIED, asset=AssetKey("judge_qualification"), blocking=True,
        description="The judge's Cohen's κ against XSTest's human labels (refusal task) reaches qualification.min_kappa "
                    "and its unparsed share stays under max_uncertain_rate; qualification.gate: warn only reports.")])
    def judge_qualification(context: AssetExecutionContext, judge: LLMResource):
        """The judge labels human-labeled data with the prompts and parsers it uses in the pipeline, through
        the ledger: refusal vs compliance vs partial on XSTest's answers (gold: the human final label),
        response harmfulness on its unsafe prompts (the New-Safety judge prompt; a full compliance is unsafe)
        and on PKU-SafeRLHF's responses (gold: is_response_<i>_safe), and which of a PKU-SafeRLHF pair is
        safer (the reward step's pairwise scores; gold: safer_response_id). Beside it on XSTest, from the same
        files and the same metric code: human annotator 2 vs 1, GPT-4's labels and XSTest's string matcher.
        Accuracy, Cohen's κ, F1, the confusion and 95 % bootstrap intervals; the gate is the refusal task's."""
        gold = GoldSets(sample_gold(xstest_human_labels(config.gold_dir), config.per_model, config.seed),
                        sample_pairs(pku_saferlhf_pairs(config.pku_gold_file), config.pku_pairs, config.seed))
        frames, reports, metadata = [], {}, {}
        for task in TASKS:
            rows, excluded = task.rows(gold, config.seed)
            batch = judge.generate(rows["request"].to_list(), family_version(task.template), log=context.log,
                                   refusals=True)
            predicted, frame = judged_rows(task, rows, batch)
            raters = {JUDGE_RATER: (rows["gold"].to_list(), predicted), **reference_raters(task, rows)}
            reports[task.name] = {rater: agreement_report(gold_labels, rated, task.labels, task.positive,
                                                          config.n_resamples, config.seed)
                                  for rater, (gold_labels, rated) in raters.items()}
            frames.append(frame)
            judge_report = reports[task.name][JUDGE_RATER]
            metadata[f"{task.name}_excluded_rows"] = excluded
            metadata[f"{task.name}_judge_kappa"] = {"kappa": round(judge_report["kappa"], 4),
                                                    "kappa_ci": [round(v, 4) for v in judge_report["kappa_ci"]]}
            metadata[f"{task.name}_judge_confusion"] = {"labels": judge_report["labels"],
                                                        "rows_gold_columns_judge": judge_report["confusion"]}
            metadata.update({f"{task.name}_{k}": v for k, v in batch.metadata().items()})
        table = pl.concat(frames)
        qualified, words = qualification_verdict(reports[REFUSAL.name][JUDGE_RATER], config.min_kappa, config.max_uncertain_rate)
        # Data version: the judge's labels and the verdict (the same after a re-run from the ledger).
        version = hashlib.sha256(json.dumps([judge.model, words, table.rows()], default=str).encode()).hexdigest()
        yield Output(table, data_version=DataVersion(version), metadata={
            **metadata, "judge_model": judge.model, "verdict": words, "qualified": qualified,
            "agreement": agreement_table(TASKS, reports), "gold_rows": gold.xstest.height,
            "pku_gold_pairs": gold.pku.height})
        refusal = reports[REFUSAL.name][JUDGE_RATER]
        yield AssetCheckResult(
            check_name=JUDGE_QUALIFIED, passed=qualified,
            severity=AssetCheckSeverity.ERROR if config.gate == "block" else AssetCheckSeverity.WARN,
            description=words + (f" (gate: warn — {config.gate_reason})" if config.gate == "warn" else ""),
            metadata={"kappa": round(refusal["kappa"], 4), "kappa_ci": [round(v, 4) for v in refusal["kappa_ci"]],
                      "uncertain_rate": round(refusal["unparsed_rate"], 4), "n": refusal["n"], "min_kappa": config.min_kappa,
                      "max_uncertain_rate": config.max_uncertain_rate, "gate": config.gate})

    return [judge_qualification]
