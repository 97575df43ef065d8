"""Selection and export: the paper's three-feature selection, the general sample, the SFT set and the
LLaMA-Factory folder published from it once the contamination gate passed."""

import hashlib
import json
from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, AssetIn, AssetKey, DataVersion, Failure, MetadataValue, Output, asset

from madef_assets.defs.diversity.volume import safety_rows_target, shortfall
from madef_assets.defs.frames import concat_prompts, params_view
from madef_assets.defs.qualification.fitness import (
    ROLE_ASSETS,
    Criterion,
    fitness_markdown,
    fitness_verdict,
    judge_verdict,
    labeler_verdict,
    role_criteria,
)
from madef_assets.defs.selection.card import (
    CombinedTerms,
    combine_licenses,
    licenses_table,
    provenance,
    render_card,
    shared_files,
)
from madef_assets.defs.selection.checks import (
    contamination_references,
    contamination_result,
    contamination_spec,
    decontaminate,
    shared_id_leaks,
)
from madef_assets.defs.selection.contamination import general_eval_questions
from madef_assets.defs.selection.export import publish_staged, stage_llamafactory_dataset, staging_dir, withdraw_dataset
from madef_assets.lineage import shared_ids
from madef_assets.reports import markdown_table, per_value
from madef_assets.settings import MethodConfig, SelectionConfig, Settings
from madef_assets.storage import run_sql

GROUP = "selection"
FITNESS_SCHEMA = {"criterion": pl.Utf8, "passed": pl.Boolean, "words": pl.Utf8}
FOLDER_SCHEMA = {
    "path": pl.Utf8,
    "sft_version": pl.Utf8,
    "files_version": pl.Utf8,
    "rows": pl.Int64,
    "formats": pl.Utf8,
}


def sft_content_version(table: pl.DataFrame, formats: tuple[str, ...]) -> str:
    """sha256 of the SFT set's content (columns and rows, in order) and export formats: the data version
    of sft_dataset, so a rebuild that produces the same set is not a change to anything downstream."""
    payload = json.dumps(
        {"columns": table.columns, "rows": table.rows(), "formats": list(formats)}, ensure_ascii=False, default=str
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def single_threshold(selection: SelectionConfig) -> float:
    """The response-safety threshold of a lone candidate's score (§3.4): its own, else the pairs'."""
    single = selection.min_single_response_safety
    return selection.min_response_safety if single is None else single


def fitness_sentence(sft_fitness: pl.DataFrame) -> str:
    """The verdict sentence from sft_fitness's rows."""
    return fitness_verdict([Criterion(*row) for row in sft_fitness.iter_rows()])


def stage_sft_set(
    table: pl.DataFrame,
    shared: pl.DataFrame,
    licenses: pl.DataFrame,
    terms: CombinedTerms,
    card_provenance: dict,
    version: str,
    method: MethodConfig,
) -> dict:
    """Stage a set that passed the contamination gate as a LLaMA-Factory folder with its dataset card,
    licenses.csv and the shared files (published by sft_dataset_folder); the staging's metadata."""
    folder = method.sft_export_dir
    card = render_card(shared, licenses, terms, card_provenance)
    files = stage_llamafactory_dataset(
        table.select("instruction", "input", "output").to_dicts(),
        folder,
        method.sft_formats,
        version,
        shared_files(shared, licenses, terms, card),
        {"license": {"terms": terms.terms, "reason": terms.reason}},
    )
    return {
        "staged_dir": MetadataValue.path(str(staging_dir(folder))),
        "files": MetadataValue.json({k: str(v) for k, v in files.items()}),
    }


def withdraw_sft_set(context: AssetExecutionContext, folder: Path) -> dict:
    """A blocked set stages nothing and withdraws the folder an earlier run published; the metadata."""
    removed = withdraw_dataset(folder)
    context.log.warning(
        f"contamination gate blocked the SFT set: nothing staged; withdrew {removed or 'nothing'} from {folder}"
    )
    return {"withdrawn": MetadataValue.json(removed)}


def mix_metadata(
    table: pl.DataFrame, attack_prompts: pl.DataFrame, safety_sft_selected: pl.DataFrame, method: MethodConfig
) -> dict:
    """The SFT set's achieved mix: rows per kind and category, the total against method.sft_total, and the
    `mix` table by kind, category, language, source, route and scored_as (dbt_like_sql/selection/sft_mix.sql)."""
    return {
        "per_kind": {k: int(v) for k, v in table.group_by("kind").len().sort("kind").iter_rows()},
        "per_category": {k: int(v) for k, v in table.group_by("category").len().sort("category").iter_rows()},
        "sft_total_target": method.sft_total,
        "sft_total": table.height,
        "mix": MetadataValue.md(
            markdown_table(run_sql("selection/sft_mix", sft=table, attack=attack_prompts, selected=safety_sft_selected))
        ),
    }


def volume_metadata(
    table: pl.DataFrame,
    attack_prompts: pl.DataFrame,
    safety_sft_selected: pl.DataFrame,
    category_quota: pl.DataFrame,
    method: MethodConfig,
) -> dict:
    """Target against achieved per category and where rows were lost on the way (dbt_like_sql/selection/
    sft_volume.sql; safety_sft_selected's `losses` splits selection's share by cut), and the shortfall against
    method.sft_total that `madef run`'s data rounds (method.volume_rounds) work off."""
    volume = run_sql(
        "selection/sft_volume",
        quotas=category_quota,
        attack=attack_prompts,
        selected=safety_sft_selected,
        sft=table,
        params=params_view(general_target=method.general_sample_size),
    )
    return {
        "volume": MetadataValue.md(markdown_table(volume)),
        "sft_total_shortfall": shortfall(table.height, method.sft_total) or 0,
    }


def folder_table(path: str, version: str, manifest: dict) -> pl.DataFrame:
    """sft_dataset_folder's one row: the published folder, the SFT set's version and the manifest's."""
    row = {
        "path": path,
        "sft_version": version,
        "files_version": manifest["files_version"],
        "rows": manifest["rows"],
        "formats": ",".join(manifest["formats"]),
    }
    return pl.DataFrame([row], schema=FOLDER_SCHEMA)


def build_selection_assets(settings: Settings) -> list:
    """The selected safety samples and the general sample, the fitness verdict, then the SFT set and its folder."""
    return [
        *build_sft_selection_assets(settings),
        build_sft_fitness_asset(settings),
        *build_sft_dataset_assets(settings),
    ]


def build_sft_selection_assets(settings: Settings) -> list:
    method = settings.method
    selection = method.selection

    @asset(group_name=GROUP, kinds={"duckdb", "sql"})
    def safety_sft_selected(context: AssetExecutionContext, reward_features: pl.DataFrame) -> pl.DataFrame:
        """Samples with low prompt perplexity (cut per language), a safe chosen response (pair and single
        scores apart) and a hard instruction, capped per category and, with method.sft_total, to the total
        left after method.general_sample_size (dbt_like_sql/selection/safety_sft_selected.sql; thresholds in
        method.selection)."""
        params = params_view(
            perplexity_quantile=selection.perplexity_quantile,
            min_response_safety=selection.min_response_safety,
            min_single_response_safety=single_threshold(selection),
            max_instruction_safety=selection.max_instruction_safety,
            per_category_cap=selection.per_category_cap,
            safety_target=safety_rows_target(method.sft_total, method.general_sample_size),
        )
        table = run_sql("selection/safety_sft_selected", reward_features=reward_features, params=params)
        losses = run_sql("selection/selection_losses", reward_features=reward_features, selected=table, params=params)
        context.add_output_metadata(
            {
                "rows_in": reward_features.height,
                "losses": MetadataValue.md(markdown_table(losses)),
                # what passed the thresholds, before the cap and the total trim: the pass rate the quotas use
                "passed_per_category": {
                    c: int(n)
                    for c, n in losses.select("category", pl.col("selected") + pl.col("cap_or_total")).iter_rows()
                },
                "thresholds": MetadataValue.json(params.to_dicts()[0]),
                "scored_as_in": per_value(reward_features.drop_nulls("chosen_score"), "scored_as"),
                "scored_as_selected": per_value(table, "scored_as"),
                "per_lang": per_value(table, "lang"),
                "per_category": per_value(table, "category"),
            }
        )
        return table

    general_ins = {f"src_{name}": AssetIn(AssetKey(name)) for name in method.general_sources}

    @asset(group_name=GROUP, kinds={"duckdb", "sql"}, ins=general_ins)
    def general_sft_sample(context: AssetExecutionContext, **sources: pl.DataFrame) -> pl.DataFrame:
        """General instruction data sampled to method.general_sample_size, method.general_zh_share of it Chinese
        (the paper's general data is Chinese-first; null: languages in proportion), stratified by source."""
        table = run_sql(
            "selection/general_sft_sample",
            general=concat_prompts(sources),
            params=params_view(
                sample_size=method.general_sample_size, seed=method.seed, zh_share=method.general_zh_share
            ),
        )
        context.add_output_metadata(
            {
                "per_source": per_value(table, "source"),
                "per_lang": per_value(table, "lang"),
                "zh_share_target": method.general_zh_share,
                "zh_share": round(table["lang"].eq("zh").mean(), 4) if table.height else None,
            }
        )
        return table

    return [safety_sft_selected, general_sft_sample]


def build_sft_fitness_asset(settings: Settings):
    method = settings.method
    labeler_ins = {"labeler_qualification": AssetIn()} if settings.qualification.labeler_sources else {}

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "polars"},
        ins={"judge_qualification": AssetIn(), **labeler_ins, **{name: AssetIn() for name in ROLE_ASSETS}},
    )
    def sft_fitness(context: AssetExecutionContext, judge_qualification: pl.DataFrame, **steps: pl.DataFrame) -> Output:
        """The fitness verdict in plain words, from the gates: each role qualified against human labels or
        not, and each LLM step's refusal and failure (incl. copy) rates against the profile's limits. One
        row per criterion; the SFT set's metadata and the evaluation report open with the verdict. Data
        version: the hash of the rows, so only a changed verdict re-runs what reads it."""
        qualified, words = judge_verdict(judge_qualification, settings.qualification)
        criteria = [Criterion("judge qualification", qualified, words)]
        if "labeler_qualification" in steps:
            criteria.append(
                Criterion(
                    "labeler qualification",
                    *labeler_verdict(steps.pop("labeler_qualification"), settings.qualification),
                )
            )
        criteria += [c for name in ROLE_ASSETS for c in role_criteria(name, steps[name], method)]
        table = pl.DataFrame([(c.name, c.passed, c.words) for c in criteria], schema=FITNESS_SCHEMA, orient="row")
        version = hashlib.sha256(json.dumps(table.rows(), ensure_ascii=False).encode("utf-8")).hexdigest()
        return Output(
            table,
            data_version=DataVersion(version),
            metadata={"verdict": fitness_verdict(criteria), "criteria": MetadataValue.md(fitness_markdown(criteria))},
        )

    return sft_fitness


def build_sft_dataset_assets(settings: Settings) -> list:
    method = settings.method
    eval_ins = {f"eval_{name}": AssetIn(AssetKey(name)) for name in method.eval_sources}
    train_ins = {f"train_{name}": AssetIn(AssetKey(name)) for name in method.train_sources}
    readers = {name: source.reader for name, source in settings.sources.items()}

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "sql", "json"},
        check_specs=[contamination_spec()],
        ins={
            "safety_sft_selected": AssetIn(),
            "general_sft_sample": AssetIn(),
            "sft_fitness": AssetIn(),
            "attack_prompts": AssetIn(),
            "category_quota": AssetIn(),
            **eval_ins,
            **train_ins,
        },
    )
    def sft_dataset(
        context: AssetExecutionContext,
        safety_sft_selected: pl.DataFrame,
        general_sft_sample: pl.DataFrame,
        sft_fitness: pl.DataFrame,
        attack_prompts: pl.DataFrame,
        category_quota: pl.DataFrame,
        **sources: pl.DataFrame,
    ):
        """The SFT set (selected safety samples + general sample) without the rows that share a long n-gram
        with an evaluation prompt or a general-capability question, or whose source record shares an id with an
        evaluation prompt's (S-Eval's translations) (method.decontaminate; removed rows are
        counted per reference in the metadata), then gated by the blocking contamination check against the
        same reference. A set that passes is staged as a LLaMA-Factory folder with its dataset card (README.md),
        licenses.csv and the rows as Parquet (published by sft_dataset_folder); a blocked one stages nothing and
        withdraws the folder an earlier run published. The combined license terms (the strictest of the rows'
        sources, madef_assets/defs/selection/card.py) are in the metadata. The metadata's `mix` table is the
        achieved mix by kind, category, language, source, route and scored_as (dbt_like_sql/selection/sft_mix.sql),
        beside method.sft_total.
        Data version: the hash of the content."""
        table = run_sql(
            "selection/sft_dataset", safety_sft_selected=safety_sft_selected, general_sft_sample=general_sft_sample
        )
        eval_sources = {k.removeprefix("eval_"): v for k, v in sources.items() if k.startswith("eval_")}
        train_sources = {k: v for k, v in sources.items() if k.startswith("train_")}
        references = contamination_references(
            concat_prompts(eval_sources), general_eval_questions(settings.evaluation.general)
        )
        id_leaks = shared_id_leaks(
            table,
            attack_prompts,
            shared_ids(concat_prompts(train_sources), readers),
            {f"source:{name}": shared_ids(frame, readers) for name, frame in eval_sources.items()},
        )
        decontamination = {}
        if method.decontaminate:
            table, decontamination = decontaminate(table, references, method, id_leaks)
            if decontamination["rows_removed"]:
                context.log.info(
                    f"decontamination removed {decontamination['rows_removed']} of {decontamination['rows_in']} "
                    f"rows: {decontamination['removed_by_reference']}"
                )
        version = sft_content_version(table, method.sft_formats)
        gate = contamination_result(table, references, method, id_leaks)
        shared = run_sql("selection/sft_export_rows", sft=table, attack=attack_prompts, selected=safety_sft_selected)
        licenses = licenses_table(shared, {name: source.license for name, source in settings.sources.items()})
        terms = combine_licenses(dict(licenses.select("source", "license").iter_rows()))
        if gate.passed:
            card_provenance = provenance(settings, references, decontamination, fitness_sentence(sft_fitness))
            export = stage_sft_set(table, shared, licenses, terms, card_provenance, version, method)
        else:
            export = withdraw_sft_set(context, method.sft_export_dir)
        yield Output(
            table,
            data_version=DataVersion(version if gate.passed else f"blocked-{version}"),
            metadata={
                "fitness_verdict": fitness_sentence(sft_fitness),
                "license_terms": f"{terms.terms} ({terms.reason})",
                "licenses": MetadataValue.md(markdown_table(licenses)),
                "content_version": version,
                **{
                    f"decontamination_{k}": MetadataValue.json(v) if isinstance(v, (dict, list)) else v
                    for k, v in decontamination.items()
                },
                "dataset_dir": MetadataValue.path(str(method.sft_export_dir)),
                **export,
                **mix_metadata(table, attack_prompts, safety_sft_selected, method),
                **volume_metadata(table, attack_prompts, safety_sft_selected, category_quota, method),
            },
        )
        yield gate

    @asset(group_name=GROUP, kinds={"duckdb", "json"})
    def sft_dataset_folder(context: AssetExecutionContext, sft_dataset: pl.DataFrame) -> Output:
        """The LLaMA-Factory folder training reads (method.sft_export_dir: madef_sft.json, the sharegpt file
        when configured, dataset_info.json, README.md, licenses.csv, data/*.parquet, madef_manifest.json), published
        by moving the folder sft_dataset
        staged into place. Dagster runs it only when sft_dataset's blocking contamination gate passed, and it
        refuses a staged folder that is not the current sft_dataset. Data version: the hash of the files."""
        version = sft_content_version(sft_dataset, method.sft_formats)
        try:
            manifest = publish_staged(method.sft_export_dir, version)
        except (FileNotFoundError, ValueError) as exc:
            raise Failure(description=str(exc)) from exc
        return Output(
            folder_table(str(method.sft_export_dir), version, manifest),
            data_version=DataVersion(manifest["files_version"]),
            metadata={
                "dataset_dir": MetadataValue.path(str(method.sft_export_dir)),
                "rows": manifest["rows"],
                "files": MetadataValue.json(manifest["files"]),
                "sft_version": version,
            },
        )

    return [sft_dataset, sft_dataset_folder]
