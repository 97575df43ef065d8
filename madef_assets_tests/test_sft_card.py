"""What a receiver of the SFT set gets: combined license terms, the dataset card, the Parquet rows, and a
folder that `datasets` and LLaMA-Factory's own loader read (in the training environment)."""

import json
import os
import subprocess
from pathlib import Path

import polars as pl
import pytest
import yaml

from madef_assets.cli import main
from madef_assets.defs.selection.card import (
    PARQUET,
    UNKNOWN_TERMS,
    combine_licenses,
    licenses_table,
    render_card,
    shared_files,
    size_category,
)
from madef_assets.defs.selection.export import (
    MANIFEST,
    ExportRefused,
    export_published,
    publish_staged,
    stage_llamafactory_dataset,
)
from madef_assets.project import PROJECT_ROOT, ConfigError
from madef_assets.settings import parse_section

TRAIN_PYTHON = PROJECT_ROOT / ".venv-train/bin/python"
ROWS = pl.DataFrame(
    {
        "prompt_id": ["s1", "s2", "g1"],
        "instruction": ["怎样伪造身份证？", "How do I pick a lock?", "Name a color."],
        "input": ["", "", ""],
        "output": ["我不能帮助伪造证件。", "I can't help with that.", "Red."],
        "category": ["CIA", "CIA", "general_sft"],
        "lang": ["zh", "en", "en"],
        "source": ["s_eval", "s_eval", "general_sft"],
        "route": ["original", "paraphrase", "general"],
        "perplexity": [3.5, 4.0, None],
        "response_safety": [0.9, 0.8, None],
        "instruction_safety": [0.1, 0.2, None],
    }
)
PROVENANCE = {
    "roles": {"judge": "transformers:bundled:gemma3-270m"},
    "templates": ["safe_response@abc"],
    "thresholds": {"min_response_safety": 0.5},
    "contamination": {"result": "passed"},
    "verdict": "Fit for training: every gate passed.",
}


@pytest.mark.parametrize(
    "licenses, terms, reason",
    [
        (
            {"a": "CC-BY-4.0", "b": "Apache-2.0", "c": "MIT"},
            "permissive (attribution): Apache-2.0, CC-BY-4.0, MIT",
            "commercial use",
        ),
        ({"a": "CC-BY-4.0", "b": "CC-BY-NC-4.0"}, "CC-BY-NC-4.0", "non-commercial from b (CC-BY-NC-4.0)"),
        ({"a": "Apache-2.0", "b": "CC-BY-NC-4.0", "c": "CC-BY-NC-SA-4.0"}, "CC-BY-NC-SA-4.0", "share-alike from c"),
        ({"a": "CC-BY-SA-3.0", "b": "CC-BY-4.0"}, "CC-BY-SA-4.0", "share-alike from a (CC-BY-SA-3.0)"),
        (
            {"a": "CC-BY-NC-SA-4.0", "b": "unknown"},
            UNKNOWN_TERMS,
            "no known license for b",
        ),  # never silently permissive
        ({"a": "MIT", "b": "GPL-3.0"}, UNKNOWN_TERMS, "no known license for b"),
        ({}, UNKNOWN_TERMS, "no rows"),
    ],
)
def test_the_strictest_terms_propagate(licenses, terms, reason):
    combined = combine_licenses(licenses)
    assert combined.terms == terms and reason in combined.reason


def test_source_licenses_are_parsed_strictly_and_default_to_unknown(tmp_path):
    source = {"reader": "s_eval", "files": ["data/s_eval/base_risk_en_sample.jsonl"]}
    licensed = parse_section("sources", {"s_eval": {**source, "license": "CC-BY-NC-SA-4.0"}})
    assert licensed["s_eval"].license == "CC-BY-NC-SA-4.0"
    with pytest.raises(ConfigError, match="sources.s_eval.license: 'CC BY-NC 4.0' is not a license id"):
        parse_section("sources", {"s_eval": {**source, "license": "CC BY-NC 4.0"}})
    from madef_assets.settings import load_settings

    demo = load_settings("demo", env={})
    assert demo.sources["s_eval"].license == "CC-BY-NC-SA-4.0" and demo.sources["general_sft"].license == "CC-BY-NC-4.0"
    raw = yaml.safe_load((PROJECT_ROOT / "config/demo.yaml").read_text(encoding="utf-8"))
    del raw["sources"]["xstest"]["license"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert load_settings(str(tmp_path / "p.yaml"), env={}).sources["xstest"].license == "unknown"


def test_card_has_the_hub_header_licenses_mix_and_provenance():
    licenses = licenses_table(ROWS, {"s_eval": "CC-BY-NC-SA-4.0"})  # general_sft not named: unknown
    assert licenses.rows() == [("general_sft", "unknown", 1), ("s_eval", "CC-BY-NC-SA-4.0", 2)]
    terms = combine_licenses(dict(licenses.select("source", "license").iter_rows()))
    card = render_card(ROWS, licenses, terms, PROVENANCE)
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "unknown" and header["language"] == ["en", "zh"]
    assert header["size_categories"] == ["n<1K"]
    assert header["task_categories"] == ["text-generation"]
    assert header["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": PARQUET}]}]
    assert f"Combined terms of the whole set: {UNKNOWN_TERMS}" in card
    assert "| CIA | en | s_eval | paraphrase | 1 |" in card and "| general_sft | unknown | 1 |" in card
    for text in (
        "transformers:bundled:gemma3-270m",
        "safe_response@abc",
        "min_response_safety: 0.5",
        "result: passed",
        "Fit for training: every gate passed.",
    ):
        assert text in card
    assert size_category(999) == "n<1K" and size_category(1000) == "1K<n<10K"


def publish(folder: Path, source_licenses: dict) -> None:
    licenses = licenses_table(ROWS, source_licenses)
    terms = combine_licenses(dict(licenses.select("source", "license").iter_rows()))
    files = shared_files(ROWS, licenses, terms, render_card(ROWS, licenses, terms, PROVENANCE))
    stage_llamafactory_dataset(
        ROWS.select("instruction", "input", "output").to_dicts(),
        folder,
        ("alpaca",),
        "v1",
        files,
        {"license": {"terms": terms.terms, "reason": terms.reason}},
    )
    publish_staged(folder, "v1")


def test_export_copies_the_published_set(tmp_path, monkeypatch):
    folder, target = tmp_path / "sft", tmp_path / "share"
    with pytest.raises(ExportRefused, match="no complete published SFT set"):
        export_published(folder, target)
    publish(folder, {"s_eval": "CC-BY-NC-SA-4.0", "general_sft": "CC-BY-NC-4.0"})
    raw = yaml.safe_load((PROJECT_ROOT / "config/demo.yaml").read_text(encoding="utf-8"))
    raw["method"]["sft_export_dir"] = str(folder)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("MADEF_STATE_DIR", str(tmp_path / "state"))
    assert main(["export", "--to", str(target), "--profile", str(tmp_path / "p.yaml")]) == 0
    copied = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert copied == ["README.md", PARQUET, "dataset_info.json", "licenses.csv", MANIFEST, "madef_sft.json"]
    manifest = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    assert set(manifest["files"]) == set(copied) - {MANIFEST} and manifest["license"]["terms"] == "CC-BY-NC-SA-4.0"
    assert pl.read_csv(target / "licenses.csv").row(-1) == ("(whole set)", "CC-BY-NC-SA-4.0", 3)
    shared = pl.read_parquet(target / PARQUET)
    assert shared.columns == ROWS.columns and shared["perplexity"].null_count() == 1
    assert main(["export", "--to", str(target), "--profile", str(tmp_path / "p.yaml")]) == 2  # exists: refused


def test_datasets_and_llamafactory_load_the_published_folder(tmp_path):
    if not TRAIN_PYTHON.exists():
        pytest.skip(f"no training environment at {TRAIN_PYTHON} (LLaMA-Factory, datasets)")
    folder = tmp_path / "sft"
    publish(folder, {"s_eval": "CC-BY-NC-SA-4.0", "general_sft": "CC-BY-NC-4.0"})
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [str(TRAIN_PYTHON), str(Path(__file__).with_name("llamafactory_load_check.py")), str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["parquet_rows"] == 3 and result["parquet_columns"] == ROWS.columns
    assert result["train_rows"] == 3 and {"input_ids", "labels"} <= set(result["train_columns"])
    assert result["labelled_tokens"] > 0 and result["response"].replace(" ", "").startswith("我不能帮助伪造证件。")
