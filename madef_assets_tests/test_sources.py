"""Source readers against the bundled real files, own fixtures, and one fixture per bad-input class."""

import hashlib
import json
import zipfile
from pathlib import Path

import polars as pl
import pytest

from madef_assets.defs.sources.normalize import PROMPT_SCHEMA, detect_lang, normalize_source, prompt_id
from madef_assets.defs.sources.readers import render_mcq, xsafety_category
from madef_assets.defs.sources.records import SourceFileError
from madef_assets.settings import SourceConfig, SourceFile, load_settings
from madef_assets_tests.conftest import FIXTURES, SHARED_DATA

DEMO = load_settings("demo", env={})


def source(reader: str, *paths, name: str = "test", lang: str | None = None, columns=None, known=None, **options) -> SourceConfig:
    files = tuple(SourceFile(path=Path(p), config_key=f"sources.{name}.files[{i}]", lang=lang, options=options) for i, p in enumerate(paths))
    return SourceConfig(name=name, reader=reader, files=files, known_categories=known, columns=columns or {}, description="")


def normalize(config: SourceConfig, max_chars: int = 4000):
    result = normalize_source(config, max_chars)
    assert result.rows_in == result.prompts.height + result.quarantine.height
    assert result.prompts.schema == pl.Schema(PROMPT_SCHEMA)
    return result


# --- bundled real data ------------------------------------------------------------------------

EXPECTED_BUNDLED = {
    # source: (rows normalized, rows quarantined, distinct categories)
    "s_eval": (940, 0, 8),
    "xsafety": (840, 0, 14),
    "safetybench": (2100, 0, 7),
    "cvalues_responsibility": (664, 0, 8),
    "beavertails_eval": (700, 0, 14),
    "pku_saferlhf": (31, 1, 0),
    "general_sft": (400, 0, 1),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_BUNDLED))
def test_bundled_sources_normalize(name):
    result = normalize(DEMO.sources[name], DEMO.max_prompt_chars)
    rows, quarantined, categories = EXPECTED_BUNDLED[name]
    assert (result.prompts.height, result.quarantine.height) == (rows, quarantined)
    assert result.prompts["source_category"].drop_nulls().n_unique() == categories
    assert result.prompts["prompt_id"].n_unique() == rows
    assert result.prompts["prompt"].str.strip_chars().str.len_chars().min() > 0
    for meta in result.prompts["meta"].head(5):
        json.loads(meta)


def test_s_eval_reads_zip_and_marks_attack_methods():
    result = normalize(DEMO.sources["s_eval"])
    attacks = result.prompts.filter(pl.col("attack_method").is_not_null())
    assert attacks.height == 300
    assert attacks["attack_method"].n_unique() == 10
    assert set(attacks["lang"]) == {"zh"}
    assert result.prompts.filter(pl.col("lang") == "en").height == 320


def test_xsafety_bom_crlf_and_categories():
    result = normalize(DEMO.sources["xsafety"])
    assert not result.prompts["prompt"].str.starts_with("\ufeff").any()
    assert not result.prompts["prompt"].str.contains("\r").any()
    assert xsafety_category(Path("Unfairness_And_Discrimination_n.csv")) == "Unfairness_And_Discrimination"
    assert xsafety_category(Path("Crimes_And_Illegal_Activities_en.csv")) == "Crimes_And_Illegal_Activities"
    goal = result.prompts.filter(pl.col("source_category") == "Goal_Hijacking")
    assert set(goal["attack_method"]) == {"Goal_Hijacking"}


def test_safetybench_prompt_is_official_format_with_answer():
    result = normalize(DEMO.sources["safetybench"])
    row = result.prompts.row(0, named=True)
    assert row["prompt"].startswith("问题：") and "\n选项：\n(A) " in row["prompt"]
    meta = json.loads(row["meta"])
    assert meta["answer"] in (0, 1, 2, 3) and meta["options"]
    assert render_mcq("Q?", ["yes", "no"], "en") == "Question: Q?\nOptions:\n(A) yes\n(B) no"


@pytest.mark.skipif(not (SHARED_DATA / "s_eval").exists(), reason="shared data folder not present")
def test_full_s_eval_from_shared_data():
    config = source("s_eval", SHARED_DATA / "s_eval/base_risk_zh_full.jsonl", SHARED_DATA / "s_eval/attack_zh_small.jsonl.zip", lang="zh")
    result = normalize(config)
    assert result.prompts.height == 20000 and result.quarantine.height == 0


# --- formats without bundled data: own fixtures -----------------------------------------------

def test_safety_prompts_fixture():
    result = normalize(source("safety_prompts", FIXTURES / "safety_prompts/typical_safety_scenarios.json",
                              FIXTURES / "safety_prompts/instruction_attack_scenarios.json", lang="zh", known=None))
    assert result.prompts.height == 5
    assert set(result.prompts["source_category"]) == {"Insult", "Mental_Health", "Goal_Hijacking", "Role_Play_Instruction"}
    assert result.prompts["response"].null_count() == 0
    attacks = result.prompts.filter(pl.col("attack_method").is_not_null())
    assert set(attacks["attack_method"]) == {"Goal_Hijacking", "Role_Play_Instruction"}
    assert json.loads(result.prompts["meta"][0])["scenario"] == "Insult"


def test_cvalues_comparison_and_mc_fixtures():
    comparison = normalize(source("cvalues_comparison", FIXTURES / "cvalues_comparison.jsonl", lang="zh"))
    assert comparison.prompts.height == 2
    assert json.loads(comparison.prompts["meta"][0])["neg_type"] == "风险回复"
    mc = normalize(source("cvalues_responsibility_mc", FIXTURES / "cvalues_responsibility_mc.jsonl", lang="zh"))
    assert mc.prompts["response"].to_list() == ["回复2", "回复1"]
    assert mc.prompts["source_category"].to_list() == ["environmental_science", "psychology"]


def test_sharegpt_and_generic_fixtures(tmp_path):
    sharegpt = normalize(source("sharegpt", FIXTURES / "sharegpt.json"))
    assert sharegpt.prompts["prompt"].to_list() == ["What is the boiling point of water at sea level?", "Name a prime number greater than 10."]
    assert sharegpt.prompts["response"].to_list()[1] == "11."
    columns = {"prompt": "question", "response": "answer", "source_category": "label"}
    csv_result = normalize(source("generic", FIXTURES / "generic.csv", columns=columns, lang="en"))
    assert csv_result.prompts["prompt"][1] == "Tell me a joke, please"
    assert json.loads(csv_result.prompts["meta"][0]) == {"difficulty": "easy"}
    frame = pl.read_csv(FIXTURES / "generic.csv")
    frame.write_parquet(tmp_path / "generic.parquet")
    frame.write_ndjson(tmp_path / "generic.jsonl")
    for path in (tmp_path / "generic.parquet", tmp_path / "generic.jsonl"):
        other = normalize(source("generic", path, columns=columns, lang="en"))
        assert other.prompts.select("prompt", "response").equals(csv_result.prompts.select("prompt", "response"))


# --- bad input: clear errors ------------------------------------------------------------------

def test_missing_file_names_file_and_config_key(tmp_path):
    with pytest.raises(SourceFileError, match=r"sources\.test\.files\[0\]: .*nope\.jsonl: file does not exist"):
        normalize(source("s_eval", tmp_path / "nope.jsonl"))


def test_empty_file_is_an_error(tmp_path):
    (tmp_path / "empty.json").write_text("  \n")
    with pytest.raises(SourceFileError, match=r"sources\.test\.files\[0\]: .*empty\.json: file is empty"):
        normalize(source("beavertails_eval", tmp_path / "empty.json"))


def test_whole_file_invalid_json_is_an_error(tmp_path):
    (tmp_path / "broken.json").write_text('[{"prompt": "a", "category": "self_harm"},\n{"prompt": ')
    with pytest.raises(SourceFileError, match="not valid JSON"):
        normalize(source("beavertails_eval", tmp_path / "broken.json"))


def test_generic_reader_needs_prompt_mapping():
    with pytest.raises(SourceFileError, match=r"sources\.test\.columns"):
        normalize(source("generic", FIXTURES / "generic.csv", columns={"response": "answer"}))


# --- bad input: quarantine rows with location and reason --------------------------------------

def s_eval_line(traceid: str, prompt, risk: str = "Data_Privacy") -> bytes:
    return json.dumps({"traceid": traceid, "risk_type": risk, "prompt": prompt, "ext": "{}"}, ensure_ascii=False).encode() + b"\n"


def test_each_bad_row_class_is_quarantined_with_location(tmp_path):
    lines = [
        s_eval_line("t1", "如何保护个人隐私？"),                          # 1 ok
        b'{"traceid": "t2", "risk_type": "Data_Privacy", "prompt": \n',     # 2 invalid JSON
        json.dumps({"traceid": "t3", "risk_type": "Data_Privacy"}).encode() + b"\n",  # 3 missing field
        s_eval_line("t4", "   \t "),                                       # 4 empty prompt
        s_eval_line("t1", "另一个问题"),                                   # 5 duplicate id
        b'{"traceid": "t6", "risk_type": "Data_Privacy", "prompt": "caf\xe9"}\n',  # 6 non-UTF-8
        s_eval_line("t7", "长" * 50),                                      # 7 over the size limit
        s_eval_line("t8", "正常问题", risk="Not_A_Risk"),                  # 8 unknown category
        s_eval_line("t9", "如何保护个人隐私？"),                           # 9 duplicate prompt
        b"\n",                                                             # blank line: not a row
        s_eval_line("t10", "第二个正常问题"),                             # 11 ok
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(lines))
    result = normalize(source("s_eval", path, lang="zh", known=None), max_chars=40)
    assert result.rows_in == 10
    assert result.prompts["prompt"].to_list() == ["如何保护个人隐私？", "第二个正常问题"]
    reasons = dict(zip(result.quarantine["location"], result.quarantine["reason"]))
    assert reasons["bad.jsonl:2"].startswith("invalid JSON")
    assert reasons["bad.jsonl:3"] == "missing field 'prompt'"
    assert reasons["bad.jsonl:4"] == "empty or whitespace-only prompt"
    assert reasons["bad.jsonl:5"] == "duplicate id 't1' (first at bad.jsonl:1)"
    assert reasons["bad.jsonl:6"].startswith("non-UTF-8 bytes")
    assert reasons["bad.jsonl:7"] == "prompt has 50 characters, over the limit of 40"
    assert reasons["bad.jsonl:9"] == "duplicate prompt (first at bad.jsonl:1)"
    assert len(reasons) == 8
    assert set(result.quarantine["source"]) == {"test"}
    # with the reader's own category list, the unknown risk type is caught too
    strict = normalize(source("s_eval", path, lang="zh"), max_chars=40)
    assert dict(zip(strict.quarantine["location"], strict.quarantine["reason"]))["bad.jsonl:8"] == "unknown category 'Not_A_Risk'"


def test_json_array_records_get_line_locations_and_non_utf8_is_caught(tmp_path):
    body = (
        b'[\n  {"prompt": "How do I hurt a cat?", "category": "animal_abuse"},\n'
        b'  {"prompt": "bad \xff byte", "category": "animal_abuse"},\n'
        b'  {"category": "animal_abuse"},\n'
        b'  "not an object"\n]\n'
    )
    (tmp_path / "bt.json").write_bytes(body)
    result = normalize(source("beavertails_eval", tmp_path / "bt.json"))
    assert result.prompts.height == 1
    assert result.quarantine.select("location", "reason").rows() == [
        ("bt.json:3", "non-UTF-8 bytes in a text field"),
        ("bt.json:4", "missing field 'prompt'"),
        ("bt.json:5", "expected a JSON object, got str"),
    ]


def test_csv_non_utf8_and_extra_columns(tmp_path):
    folder = tmp_path / "xs"
    folder.mkdir()
    (folder / "Insult.csv").write_bytes(b"\xef\xbb\xbfgood prompt\r\nbad \xfe prompt\r\n\"two\",\"columns\"\r\n")
    result = normalize(source("xsafety", folder, lang="en"))
    assert result.prompts["prompt"].to_list() == ["good prompt"]
    assert result.quarantine["reason"].to_list() == ["non-UTF-8 bytes in a text field", "2 non-empty columns, expected 1"]
    assert result.quarantine["location"].to_list() == ["Insult.csv:2", "Insult.csv:3"]


def test_zip_without_jsonl_is_an_error(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as archive:
        archive.writestr("readme.txt", "nothing")
    with pytest.raises(SourceFileError, match="holds no .jsonl"):
        normalize(source("s_eval", tmp_path / "x.zip"))


# --- pure helpers -----------------------------------------------------------------------------

def test_prompt_id_is_stable_and_content_based():
    assert prompt_id("s", "zh", "你好") == prompt_id("s", "zh", "你好")
    assert len({prompt_id("s", "zh", "你好"), prompt_id("t", "zh", "你好"), prompt_id("s", "en", "你好"), prompt_id("s", "zh", "你好!")}) == 4
    # The formula is part of the data contract: ids in stored tables must not change between versions.
    assert prompt_id("s_eval", "en", "hello") == hashlib.sha256(b"s_eval\x1fen\x1fhello").hexdigest()[:20]


def test_detect_lang():
    assert detect_lang("如何保护个人隐私？") == "zh"
    assert detect_lang("How do I protect my privacy?") == "en"
    assert detect_lang("请把这句话翻译成英文: I love you") == "zh"
