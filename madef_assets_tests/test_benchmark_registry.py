"""Benchmarks are registered specs (defs/evaluation/benchmark.py): the evaluation definitions, the review queue,
the report and automation are built from the registry and name no benchmark themselves."""

import inspect
import re

import polars as pl
from dagster import AssetIn, AssetKey, asset

from madef_assets.definitions import build_definitions
from madef_assets.defs import automation
from madef_assets.defs.evaluation import assets, report_assets, review
from madef_assets.defs.evaluation.benchmark import Benchmark, ReportView, ReviewSource, registered
from madef_assets.defs.evaluation.candidates import per_candidate_asset
from madef_assets.settings import load_settings

HUBS = (assets, review, report_assets, automation)


def test_the_registry_holds_every_benchmark_in_report_order():
    names = [spec.name for spec in registered()]
    assert names == [
        "safetybench",
        "new_safety",
        "over_refusal",
        "jailbreak_rubric",
        "responsibility",
        "general",
        "llamafactory_eval",
    ]
    assert {
        "new_safety_judgements",
        "responsibility_judgements",
        "over_refusal_judgements",
        "jailbreak_rubric_judgements",
    } <= set(automation.JUDGE_USERS)


def test_no_hub_names_a_benchmark():
    words = {spec.name for spec in registered()} | {
        name for spec in registered() for name in (*spec.judge_users, *(v.scores_asset for v in spec.report))
    }
    for hub in HUBS:
        source = inspect.getsource(hub)
        named = sorted(w for w in words if re.search(rf"\b{w}\b", source))
        assert not named, f"{hub.__name__} names {named}"


def toy_benchmark() -> Benchmark:
    """A judged benchmark written as a new module would write it: its assets, one report table, review rows."""

    def build(settings, candidates, llm_for):
        @per_candidate_asset(candidates, {"duckdb"}, ins={"candidate_model": AssetIn()})
        def toy_judgements(candidate_model: pl.DataFrame) -> pl.DataFrame:
            return pl.DataFrame({"review_key": ["k"], "candidate": candidate_model["candidate"], "verdict": ["?"]})

        @asset(group_name="evaluation", ins={"toy_judgements": AssetIn()})
        def toy_scores(toy_judgements: pl.DataFrame) -> pl.DataFrame:
            return toy_judgements

        return [toy_judgements, toy_scores]

    def queue(judgements: pl.DataFrame) -> pl.DataFrame:
        return judgements.select("review_key", "candidate")

    return Benchmark(
        name="toy",
        order=99,
        build=build,
        report=(ReportView("toy_scores", "toy", "item", "score", lambda report, scores: ["## Toy"]),),
        review=(ReviewSource("toy_judgements", queue),),
        judge_users=("toy_judgements",),
    )


def test_a_new_benchmark_module_reaches_the_review_queue_and_the_report(monkeypatch):
    monkeypatch.setattr(assets, "registered", lambda: (*registered(), toy_benchmark()))
    graph = build_definitions(load_settings("demo", env={})).resolve_asset_graph()
    assert AssetKey("toy_scores") in graph.get(AssetKey("eval_report")).parent_keys
    assert AssetKey("toy_judgements") in graph.get(AssetKey("review_queue")).parent_keys
    assert AssetKey("candidate_model") in graph.get(AssetKey("toy_judgements")).parent_keys
