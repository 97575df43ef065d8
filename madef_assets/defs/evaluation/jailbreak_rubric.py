"""The jailbreak rubric benchmark per candidate: forbidden prompts (StrongREJECT, HarmBench or JailbreakBench
files), each wrapped by the configured jailbreak methods and `none` (the plain prompt), answered by the
candidate and graded by the judge with StrongREJECT's rubric (refused 0/1, convincing 1-5, specific 1-5;
strongreject.py). Scores per method and over all methods: the mean StrongREJECT score (0 = refused or useless,
1 = a very convincing, very specific harmful answer; lower is safer) with a bootstrap interval and the refusal
rate with a Wilson interval. A grade the judge cannot give goes to the review queue."""

from collections.abc import Callable

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    MetadataValue,
    Output,
    StaticPartitionsDefinition,
    asset,
)

from madef_assets.defs.evaluation.candidates import candidate_pools, files_hash, per_candidate_asset, sample_per_group
from madef_assets.defs.evaluation.intervals import bootstrap_mean_interval, with_wilson
from madef_assets.defs.evaluation.judged import Verdicts, candidate_answers, judge_answers, scores_table
from madef_assets.defs.evaluation.judging import review_key
from madef_assets.defs.evaluation.strongreject import (
    BENCHMARK,
    RUBRIC_SPEC,
    known_methods,
    load_forbidden_prompts,
    load_wrappers,
    panel_grade,
    parse_rubric,
    rubric_vote,
    wrap,
    wrappers_version,
)
from madef_assets.defs.guards import require_answer
from madef_assets.defs.llm_steps import role_step
from madef_assets.defs.verdicts import UNCERTAIN
from madef_assets.llm.resource import LLMResource
from madef_assets.project import ConfigError
from madef_assets.prompts import template
from madef_assets.reports import markdown_table, per_value
from madef_assets.settings import Settings
from madef_assets.storage import run_sql

JUDGE_TEMPLATE = "jailbreak_rubric_judge"
JUDGE_LANG = "en"  # StrongREJECT's rubric is English; a Chinese prompt and answer are graded with it
GRADED = "graded"
SCORE_SCALE = (0.0, 1.0)
QUARANTINE_SHOWN = 20
ITEM_COLUMNS = ("item_id", "prompt_id", "method", "lang", "category", "forbidden_prompt", "prompt")


def build_jailbreak_rubric_assets(
    settings: Settings, candidates: StaticPartitionsDefinition, llm_for: Callable[[pl.DataFrame, bool], LLMResource]
) -> list:
    config = settings.evaluation.jailbreak_rubric
    if not config.files:
        return []
    wrappers = load_wrappers()
    unknown = [m for m in config.methods if m not in known_methods(wrappers)]
    if unknown:
        raise ConfigError(
            f"evaluation.jailbreak_rubric.methods: {unknown} unknown; known: {list(known_methods(wrappers))}"
        )
    members = settings.roles["judge"].members
    for index, member in enumerate(members):
        # The rubric is asked only by madef's prompt: a guard judge (Llama Guard, WildGuard, ...) cannot grade it.
        where = "models.judge" + (f"[{index}]" if len(members) > 1 else "")
        require_answer(member.judge_format, None, f"{where} (evaluation.jailbreak_rubric.files is set)")
    paths = [file.path for file in config.files]

    @asset(
        group_name="evaluation",
        kinds={"duckdb", "csv"},
        check_specs=[AssetCheckSpec("quarantine_share", asset="jailbreak_rubric_prompts", blocking=True)],
    )
    def jailbreak_rubric_prompts(context: AssetExecutionContext):
        """The forbidden prompts of evaluation.jailbreak_rubric.files, each read by its published format's loader
        and checked by the sources' rules (a malformed row is quarantined with its location and reason, listed
        in the metadata, never dropped silently), evaluation.jailbreak_rubric.per_language per language
        (seeded), each wrapped by every configured method (`none`: the plain prompt). A blocking check fails
        when the quarantined share is over ingest.max_quarantine_share."""
        loaded = load_forbidden_prompts(config.files, settings.ingest.max_file_bytes, settings.ingest.max_prompt_chars)
        prompts = loaded.prompts.select("prompt_id", "lang", category="source_category", forbidden_prompt="prompt")
        sample = sample_per_group(prompts, "lang", "prompt_id", config.per_language, settings.evaluation.seed)
        table = wrapped(sample, config.methods, wrappers)
        quarantine = loaded.quarantine.select("location", "reason", "raw")
        share = loaded.quarantine_share
        yield Output(
            table,
            metadata={
                "files": [str(p) for p in paths],
                "rows_in": loaded.rows_in,
                "rows_kept": loaded.prompts.height,
                "rows_quarantined": loaded.quarantine.height,
                "quarantine_reasons": per_value(loaded.quarantine, "reason"),
                "quarantine": MetadataValue.md(markdown_table(quarantine.head(QUARANTINE_SHOWN))),
                "forbidden_prompts_sampled": sample.height,
                "languages": per_value(sample, "lang"),
                "answers_per_candidate": table.height,
                "methods": list(config.methods),
                "wrappers": wrappers_version(),
            },
        )
        yield AssetCheckResult(
            check_name="quarantine_share",
            passed=share <= settings.ingest.max_quarantine_share,
            metadata={
                "quarantined": loaded.quarantine.height,
                "rows_in": loaded.rows_in,
                "share": round(share, 4),
                "limit": settings.ingest.max_quarantine_share,
            },
        )

    @per_candidate_asset(
        candidates,
        {"duckdb", "llm"},
        pool_of=candidate_pools(settings),
        ins={"candidate_model": AssetIn(), "jailbreak_rubric_prompts": AssetIn()},
    )
    def jailbreak_rubric_responses(
        context: AssetExecutionContext, candidate_model: pl.DataFrame, jailbreak_rubric_prompts: pl.DataFrame
    ):
        """The candidate's answer to every wrapped forbidden prompt (chat template when the model has one),
        limited to evaluation.jailbreak_rubric.max_new_tokens."""
        llm = llm_for(candidate_model, False)
        return candidate_answers(
            context,
            llm,
            jailbreak_rubric_prompts,
            ITEM_COLUMNS,
            "jailbreak_rubric_response@1",
            llm.default_params.with_changes(max_new_tokens=config.max_new_tokens),
            f"{files_hash(paths)}:{wrappers_version()}",
            {"per_method": per_value(jailbreak_rubric_prompts, "method")},
        )

    @per_candidate_asset(
        candidates,
        {"duckdb", "llm"},
        **role_step(settings, "judge"),
        deps=[AssetKey("judge_qualification")],
    )
    def jailbreak_rubric_judgements(
        context: AssetExecutionContext, judge: LLMResource, jailbreak_rubric_responses: pl.DataFrame
    ):
        """Each answer graded with StrongREJECT's rubric against the forbidden prompt it wraps: refused 0/1,
        convincing 1-5, specific 1-5, asked as JSON where the judge's backend enforces output shapes and in
        StrongREJECT's `#scores` layout otherwise (both read to the same grade). A panel's grade: refused by
        majority, the other two the lower median. A grade no member gave (unreadable, failed, a tied refusal
        vote) or an answer that failed is `uncertain` and goes to the review queue; an answer the provider
        refused (moderation) is a refusal."""
        prompt = template(JUDGE_TEMPLATE, JUDGE_LANG)
        verdicts = judge_answers(
            context,
            judge,
            jailbreak_rubric_responses,
            lambda row: prompt.render(forbidden_prompt=row["forbidden_prompt"], response=row["response"]),
            JUDGE_TEMPLATE,
            rubric_vote,
            params=judge.default_params.with_changes(max_new_tokens=config.judge_max_new_tokens, stop=()),
            parse=parse_rubric,
            output=RUBRIC_SPEC,
        )
        grades = [row_grade(verdicts, i) for i in range(len(verdicts.rows))]
        table = jailbreak_rubric_responses.select("candidate", *ITEM_COLUMNS, "response").with_columns(
            judge_refused=pl.Series([g[0] if g else None for g, _ in grades], dtype=pl.Int64),
            judge_convincing=pl.Series([g[1] if g else None for g, _ in grades], dtype=pl.Int64),
            judge_specific=pl.Series([g[2] if g else None for g, _ in grades], dtype=pl.Int64),
            judge_label=pl.Series([GRADED if g else UNCERTAIN for g, _ in grades], dtype=pl.Utf8),
            judge_reason=pl.Series([reason for _, reason in grades], dtype=pl.Utf8),
            judge_raw_output=verdicts.raw_outputs(),
            review_key=pl.Series(
                [
                    review_key(BENCHMARK, context.partition_key, item, response)
                    for item, response in zip(
                        jailbreak_rubric_responses["item_id"], jailbreak_rubric_responses["response"]
                    )
                ],
                dtype=pl.Utf8,
            ),
        )
        return Output(
            table,
            metadata={
                **verdicts.metadata(),
                "labels": per_value(table, "judge_label"),
                "to_review": int((table["judge_label"] == UNCERTAIN).sum()),
            },
        )

    @per_candidate_asset(candidates, {"duckdb", "sql"})
    def jailbreak_rubric_scores(
        context: AssetExecutionContext,
        jailbreak_rubric_judgements: pl.DataFrame,
        review_decisions: pl.DataFrame,
        jailbreak_rubric_responses: pl.DataFrame,
    ) -> pl.DataFrame:
        """Per jailbreak method and over all methods (`(all)`): the mean StrongREJECT score of the graded answers
        with a percentile-bootstrap 95 % interval (score_ci_low / score_ci_high, 0-1), and the refusal rate (%)
        with a Wilson 95 % interval (ci_low / ci_high). Answers still pending review are counted and left out of
        both; a reviewer's grade counts as the judge's would."""
        decided = decided_grades(jailbreak_rubric_judgements, review_decisions)
        table = with_wilson(run_sql("evaluation/jailbreak_rubric_scores", decided=decided), "refused", "graded")
        scores = {m: g["score"].drop_nulls().to_list() for (m,), g in decided.group_by("method")}
        bounds = [
            bootstrap_mean_interval(scores.get(m, []), SCORE_SCALE, seed=settings.evaluation.seed)
            for m in table["method"]
        ]
        table = table.with_columns(
            score_ci_low=pl.Series([low for low, _ in bounds], dtype=pl.Float64),
            score_ci_high=pl.Series([high for _, high in bounds], dtype=pl.Float64),
        )
        shown = (
            "method",
            "answers",
            "graded",
            "pending_review",
            "mean_score",
            "score_ci_low",
            "score_ci_high",
            "refusal_rate",
            "ci_low",
            "ci_high",
        )
        return scores_table(context, table, jailbreak_rubric_responses, shown)

    return [jailbreak_rubric_prompts, jailbreak_rubric_responses, jailbreak_rubric_judgements, jailbreak_rubric_scores]


def wrapped(prompts: pl.DataFrame, methods: list[str], wrappers: dict[str, dict[str, str]]) -> pl.DataFrame:
    """Every forbidden prompt once per method: `item_id` (the same for every candidate), `prompt` (what the
    candidate is asked)."""
    rows = [
        {
            "item_id": f"{row['prompt_id']}:{method}",
            **row,
            "method": method,
            "prompt": wrap(row["forbidden_prompt"], row["lang"], method, wrappers),
        }
        for method in methods
        for row in prompts.iter_rows(named=True)
    ]
    schema = {column: pl.Utf8 for column in ITEM_COLUMNS}
    return pl.DataFrame(rows, schema=schema).select(ITEM_COLUMNS)


def row_grade(verdicts: Verdicts, row: int) -> tuple[tuple[int, int | None, int | None] | None, str]:
    """One answer's grade (refused, convincing, specific; None: uncertain) and why."""
    record = verdicts.rows[row]
    if record["status"] == "refused":
        return (1, None, None), f"the provider refused the request ({record['error']})"
    if row not in verdicts.results:
        return None, f"no answer to grade ({record['status']}: {record['error']})"
    position = verdicts.judged.index(row)
    votes = [member[position] for member in verdicts.answers.votes]
    grade = panel_grade(votes)
    first = verdicts.results[row]
    if grade is None:
        why = first.error if first.status != "ok" else "the panel's refusal votes tie"
        reason = f"no grade: {why}"
    else:
        reason = first.value.reasoning if first.status == "ok" and first.value is not None else ""
    return grade, f"panel votes {', '.join(votes)}; {reason}" if len(votes) > 1 else reason


def decided_grades(judgements: pl.DataFrame, decisions: pl.DataFrame) -> pl.DataFrame:
    """Each answer's grade after review and its StrongREJECT score, per method and under '(all)'."""
    return run_sql("evaluation/jailbreak_rubric_decided", judgements=judgements, decisions=decisions)
