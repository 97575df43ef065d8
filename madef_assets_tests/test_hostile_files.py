"""Hostile input files given to the source readers as a user would configure them.

Each file is built here (tmp_path) and read through `normalize_source`, the function the ingest asset runs.
Outcomes are checked from outside: what is in the prompt and quarantine tables, which error is raised,
how long it took and how much memory was allocated, and that rows in = kept + quarantined (+ merged).
"""

import bz2
import csv
import gzip
import io
import json
import lzma
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import unicodedata
import warnings
import zipfile
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey

from madef_assets.defs.sources.assets import content_version, ingest_counts, source_input_files
from madef_assets.defs.sources.checks import row_balance_result
from madef_assets.defs.sources.normalize import normalize_source
from madef_assets.defs.sources.records import MAX_INT_DIGITS, MAX_JSON_DEPTH, SourceFileError, read_capped
from madef_assets.defs.sources.text import forbidden_char_problem, visible
from madef_assets.settings import DEFAULT_MAX_FILE_BYTES, SourceConfig, SourceFile
from madef_assets_tests.conftest import FIXTURES

KEY = "sources.hostile.files[0]"
MiB = 1 << 20


def source(reader: str, *paths, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, columns=None, **options):
    files = tuple(
        SourceFile(path=Path(p), config_key=f"sources.hostile.files[{i}]", lang="en", **options)
        for i, p in enumerate(paths)
    )
    return SourceConfig(
        name="hostile",
        reader=reader,
        files=files,
        known_categories=None,
        columns=columns or {},
        description="",
        max_file_bytes=max_file_bytes,
    )


def normalize(config: SourceConfig, max_chars: int = 4000):
    result = normalize_source(config, max_chars)
    assert result.rows_in == result.prompts.height + result.quarantine.height + result.rows_merged
    # every quarantine row says where: a file name, then a line (or row), a zip member or nothing more
    for location in result.quarantine["location"]:
        assert re.fullmatch(r"[^:!]+(:\d+|:row \d+|!.+)?( \[.+\])?", location), location
    return result


def reasons(result) -> dict[str, str]:
    return dict(zip(result.quarantine["location"], result.quarantine["reason"]))


def s_eval_line(traceid: str, prompt: str, **extra) -> str:
    record = {"traceid": traceid, "risk_type": "Data_Privacy", "prompt": prompt, "ext": "{}", **extra}
    return json.dumps(record, ensure_ascii=False) + "\n"


def finishes(call, seconds: float = 20.0):
    """Run call in a thread; the exception it raised (or None). Fails if it is still running after `seconds`:
    a reader blocked on a FIFO or reading /dev/zero never returns."""
    outcome: list = []

    def run():
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds}s"
    return outcome[0]


# --- encodings -----------------------------------------------------------------------------------

PROMPTS = ["How do I protect my privacy online?", "如何保护个人隐私？", "Is it safe to share my address?"]


@pytest.mark.parametrize(
    ("codec", "named"),
    [
        ("utf-16", "UTF-16-LE text (byte order mark)"),
        ("utf-16-be", "UTF-16-BE text without a byte order mark"),
        ("utf-16-le", "UTF-16-LE text without a byte order mark"),
        ("utf-32", "UTF-32-LE text (byte order mark)"),
        ("utf-32-le", "UTF-32-LE text without a byte order mark"),
        ("utf-32-be", "UTF-32-BE text without a byte order mark"),
    ],
)
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "generic_csv"])
def test_utf16_and_utf32_files_are_file_errors_naming_the_encoding(tmp_path, codec, named, fmt):
    if codec == "utf-16":  # Python writes the byte order mark of this machine's order
        named = named.replace("LE", "LE" if b"\xff\xfe".decode("utf-16") == "" else "BE")
    body = {
        "csv": "\r\n".join(PROMPTS) + "\r\n",
        "generic_csv": "question,answer\r\n" + "".join(f'"{p}",ok\r\n' for p in PROMPTS),
        "jsonl": "".join(s_eval_line(f"t{i}", p) for i, p in enumerate(PROMPTS)),
        "json": json.dumps([{"prompt": p, "category": "privacy_violation"} for p in PROMPTS], ensure_ascii=False),
    }[fmt]
    folder = tmp_path / "xs"
    folder.mkdir()
    path = folder / "Insult.csv" if fmt == "csv" else tmp_path / f"data.{fmt.removeprefix('generic_')}"
    path.write_bytes(body.encode(codec))
    config = {
        "csv": source("xsafety", folder),
        "generic_csv": source("generic", path, columns={"prompt": "question"}),
        "jsonl": source("s_eval", path),
        "json": source("beavertails_eval", path),
    }[fmt]
    with pytest.raises(SourceFileError) as info:
        normalize(config)
    message = str(info.value)
    assert message.startswith(f"{KEY}: ") and path.name in message
    assert named in message and "sources must be UTF-8" in message


def test_utf16_without_bom_of_chinese_only_lines_is_told_by_its_line_feeds(tmp_path):
    # no ASCII letter at all: only the CR LF between the lines put NUL bytes in the file
    folder = tmp_path / "xs"
    folder.mkdir()
    (folder / "Insult.csv").write_bytes("你是个笨蛋吗\r\n为什么有人这么蠢\r\n".encode("utf-16-le"))
    with pytest.raises(SourceFileError, match="UTF-16-LE text without a byte order mark"):
        normalize(source("xsafety", folder))


def test_a_few_nul_characters_in_utf8_are_row_problems_not_an_encoding(tmp_path):
    # raw NUL bytes in a UTF-8 CSV (at both byte parities) and an escaped NUL in JSON: those rows only
    folder = tmp_path / "xs"
    folder.mkdir()
    (folder / "Insult.csv").write_bytes(b"first prompt\nse\x00cond\nthi\x00rd\nfourth prompt\n")
    result = normalize(source("xsafety", folder))
    assert result.prompts["prompt"].to_list() == ["first prompt", "fourth prompt"]
    assert reasons(result) == {
        "Insult.csv:2": "control character U+0000 in field 'prompt' at character 3",
        "Insult.csv:3": "control character U+0000 in field 'prompt' at character 4",
    }
    assert result.quarantine["raw"].to_list() == ["se\\u0000cond", "thi\\u0000rd"]
    (tmp_path / "n.jsonl").write_text(s_eval_line("t1", "ok prompt") + s_eval_line("t2", "nul\u0000here"))
    jsonl = normalize(source("s_eval", tmp_path / "n.jsonl"))
    assert reasons(jsonl) == {"n.jsonl:2": "control character U+0000 in field 'prompt' at character 4"}


def test_a_utf16_zip_member_is_quarantined_and_the_other_members_read(tmp_path):
    path = tmp_path / "attack.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.jsonl", s_eval_line("t1", "第一个问题"))
        archive.writestr("b.jsonl", s_eval_line("t2", "第二个问题").encode("utf-16"))
    result = normalize(source("s_eval", path))
    assert result.prompts["prompt"].to_list() == ["第一个问题"]
    assert reasons(result)["attack.zip!b.jsonl"].startswith("zip member is UTF-16-")


@pytest.mark.parametrize(
    ("compress", "named"),
    [
        (gzip.compress, "gzip"),
        (bz2.compress, "bzip2"),
        (lzma.compress, "xz"),
        (lambda data: zipfile_bytes({"x.jsonl": data}), "zip"),
    ],
)
def test_compressed_files_given_to_a_text_reader_are_refused_unopened(tmp_path, compress, named):
    # a gzip bomb: 64 MiB of one line, a few KiB on disk; it is refused without being decompressed
    bomb = compress(b'{"prompt": "' + b"A" * (64 * MiB) + b'"}\n')
    assert len(bomb) < MiB
    for name in ("bomb.jsonl.gz", "bomb.jsonl", "bomb.json"):
        (tmp_path / name).write_bytes(bomb)
        tracemalloc.start()
        error = finishes(lambda: normalize(source("s_eval", tmp_path / name)))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert isinstance(error, SourceFileError) and f"is a {named} file, not UTF-8 text" in str(error)
        assert peak < 8 * MiB + 2 * len(bomb)
    (tmp_path / "bomb.gz").write_bytes(bomb)
    with pytest.raises(SourceFileError, match=r"unknown format '\.gz'"):
        normalize(source("generic", tmp_path / "bomb.gz", columns={"prompt": "prompt"}))


def zipfile_bytes(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# --- control, bidirectional and invisible characters ----------------------------------------------


@pytest.mark.parametrize(
    ("char", "reason"),
    [
        ("\x00", "control character U+0000"),
        ("\x1b", "control character U+001B"),
        ("\x0b", "control character U+000B"),
        ("\x7f", "control character U+007F"),
        ("\x85", "control character U+0085"),
        ("\u202e", "bidirectional control U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("\u202a", "bidirectional control U+202A LEFT-TO-RIGHT EMBEDDING"),
        ("\u2066", "bidirectional control U+2066 LEFT-TO-RIGHT ISOLATE"),
        ("\u2069", "bidirectional control U+2069 POP DIRECTIONAL ISOLATE"),
        ("\u200f", "bidirectional control U+200F RIGHT-TO-LEFT MARK"),
        ("\u061c", "bidirectional control U+061C ARABIC LETTER MARK"),
        ("\ufeff", "invisible format character U+FEFF ZERO WIDTH NO-BREAK SPACE"),
        ("\U000e0041", "invisible format character U+E0041 TAG LATIN CAPITAL LETTER A"),
        ("\ufff9", "invisible format character U+FFF9 INTERLINEAR ANNOTATION ANCHOR"),
        ("\u200b", "invisible format character U+200B ZERO WIDTH SPACE"),
        ("\u2060", "invisible format character U+2060 WORD JOINER"),
        ("\u2064", "invisible format character U+2064 INVISIBLE PLUS"),
        ("\u00ad", "invisible format character U+00AD SOFT HYPHEN"),
        ("\u180e", "invisible format character U+180E MONGOLIAN VOWEL SEPARATOR"),
        ("\U000e0001", "invisible format character U+E0001 LANGUAGE TAG"),
        ("\u2028", "line or paragraph separator U+2028 LINE SEPARATOR"),
        ("\u2029", "line or paragraph separator U+2029 PARAGRAPH SEPARATOR"),
        ("\u115f", "invisible filler character U+115F HANGUL CHOSEONG FILLER"),
        ("\u1160", "invisible filler character U+1160 HANGUL JUNGSEONG FILLER"),
        ("\u3164", "invisible filler character U+3164 HANGUL FILLER"),
        ("\uffa0", "invisible filler character U+FFA0 HALFWIDTH HANGUL FILLER"),
    ],
)
def test_control_bidi_and_invisible_characters_quarantine_the_row_with_the_reason(tmp_path, char, reason):
    lines = [
        s_eval_line("t1", "an ordinary prompt"),
        s_eval_line("t2", f"print('ok'){char} # hidden"),
        s_eval_line("t3", "another ordinary prompt"),
        s_eval_line(f"t4{char}", "a prompt with a hidden traceid"),
    ]
    (tmp_path / "c.jsonl").write_text("".join(lines), encoding="utf-8")
    result = normalize(source("s_eval", tmp_path / "c.jsonl"))
    assert result.prompts["prompt"].to_list() == ["an ordinary prompt", "another ordinary prompt"]
    assert reasons(result) == {
        "c.jsonl:2": f"{reason} in field 'prompt' at character 12",
        "c.jsonl:4": f"{reason} in field 'native_id' at character 3",
    }
    # the excerpt shows the character as an escape, never the character itself
    assert all(char not in raw for raw in result.quarantine["raw"])
    assert f"\\u{ord(char):04x}" in result.quarantine["raw"][0] or f"\\U{ord(char):08x}" in result.quarantine["raw"][0]


def test_forbidden_characters_in_response_category_and_meta_are_caught_too(tmp_path):
    rows = [
        {"question": "q1", "answer": "fine", "label": "a", "note": "plain"},
        {"question": "q2", "answer": "evil\u202etxt.exe", "label": "a", "note": "plain"},
        {"question": "q3", "answer": "fine", "label": "a\x07", "note": "plain"},
        {"question": "q4", "answer": "fine", "label": "a", "note": "hidden \u2067 isolate"},
    ]
    path = tmp_path / "g.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    columns = {"prompt": "question", "response": "answer", "source_category": "label"}
    result = normalize(source("generic", path, columns=columns))
    assert result.prompts["prompt"].to_list() == ["q1"]
    assert reasons(result) == {
        "g.jsonl:2": "bidirectional control U+202E RIGHT-TO-LEFT OVERRIDE in field 'response' at character 5",
        "g.jsonl:3": "control character U+0007 in field 'source_category' at character 2",
        "g.jsonl:4": "bidirectional control U+2067 RIGHT-TO-LEFT ISOLATE in field 'meta.note' at character 8",
    }


def test_ordinary_text_of_every_script_is_kept(tmp_path):
    kept = [
        "Tabs\tand\r\nline breaks\nare ordinary",
        "Family emoji with zero-width joiners: 👨\u200d👩\u200d👧",
        "Persian with a zero-width non-joiner: می\u200cخواهم",
        "عربي: كيف أحمي خصوصيتي؟",
        "עברית: איך אני שומר על הפרטיות שלי?",
        "中文：如何保护个人隐私？",
        "Ελληνικά, русский, हिन्दी, 한국어",
        "Emoji with a presentation selector: \u2764\ufe0f, a keycap: 1\ufe0f\u20e3",
        "Spaces of other widths: ideographic\u3000space, no-break\u00a0space",
    ]
    (tmp_path / "ok.jsonl").write_text("".join(s_eval_line(f"t{i}", p) for i, p in enumerate(kept)))
    result = normalize(source("s_eval", tmp_path / "ok.jsonl"))
    assert result.quarantine.height == 0 and result.prompts["prompt"].to_list() == kept


def test_every_format_character_and_separator_but_the_joiners_is_forbidden():
    """The rule is by Unicode category, so a format character nobody listed is caught as well."""
    format_chars = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) in ("Cf", "Zl", "Zp")]
    assert len(format_chars) > 150
    let_in = [f"U+{ord(c):04X}" for c in format_chars if forbidden_char_problem(f"a{c}b", "prompt") is None]
    assert let_in == ["U+200C", "U+200D"]
    assert all(visible(c) != c for c in format_chars if c not in "\u200c\u200d")  # shown as escapes


# --- JSON: duplicate keys and nesting --------------------------------------------------------------


def test_duplicate_keys_quarantine_the_record_in_jsonl_json_and_nested_objects(tmp_path):
    (tmp_path / "d.jsonl").write_text(
        s_eval_line("t1", "kept")
        + '{"traceid": "t2", "risk_type": "Data_Privacy", "prompt": "harmless", "prompt": "the real one"}\n'
        + s_eval_line("t3", "nested", ext='{"model": "attack", "category": "a", "category": "b"}')
        + '{"traceid": "t4", "risk_type": "Data_Privacy", "prompt": "p", "meta": {"x": 1, "x": 2}}\n'
        + s_eval_line("t5", "also kept")
    )
    jsonl = normalize(source("s_eval", tmp_path / "d.jsonl"))
    assert jsonl.prompts["prompt"].to_list() == ["kept", "also kept"]
    assert reasons(jsonl) == {
        "d.jsonl:2": "duplicate key 'prompt' in one JSON object",
        "d.jsonl:3": "field 'ext': duplicate key 'category' in one JSON object",
        "d.jsonl:4": "duplicate key 'x' in one JSON object",
    }
    (tmp_path / "d.json").write_text(
        '[\n{"prompt": "first", "category": "self_harm"},\n'
        '{"prompt": "hidden", "category": "self_harm", "prompt": "shown"},\n'
        '{"prompt": "last", "category": "self_harm"}\n]\n'
    )
    array = normalize(source("beavertails_eval", tmp_path / "d.json"))
    assert array.prompts["prompt"].to_list() == ["first", "last"]
    assert reasons(array) == {"d.json:3": "duplicate key 'prompt' in one JSON object"}


def test_duplicate_ids_in_a_safetybench_answers_file_are_a_file_error(tmp_path):
    (tmp_path / "q.json").write_text(
        json.dumps([{"id": 1, "category": "Offensiveness", "question": "q", "options": ["a", "b"]}])
    )
    (tmp_path / "a.json").write_text('{"1": {"answer": 0},\n "1": {"answer": 1}}')
    with pytest.raises(SourceFileError, match=r"files\[0\]\.answers: .*a\.json: not valid JSON: duplicate key '1'"):
        normalize(source("safetybench", tmp_path / "q.json", answers=str(tmp_path / "a.json")))


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def nested_objects(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 200_000])
def test_deep_nesting_quarantines_the_record_and_the_rest_is_read(tmp_path, depth):
    (tmp_path / "n.jsonl").write_text(
        s_eval_line("t1", "before")
        + '{"traceid": "t2", "risk_type": "Data_Privacy", "prompt": "p", "x": '
        + nested(depth)
        + "}\n"
        + s_eval_line("t3", "after")
    )
    jsonl = normalize(source("s_eval", tmp_path / "n.jsonl"))
    assert jsonl.prompts["prompt"].to_list() == ["before", "after"]
    assert reasons(jsonl) == {"n.jsonl:2": f"JSON nested deeper than {MAX_JSON_DEPTH} levels"}
    # in a JSON array (the decoder cannot step over a value it refused: the brackets are matched instead),
    # and in an object of arrays, both as a record and as the value of a key
    (tmp_path / "n.json").write_text(
        '[{"prompt": "before", "category": "self_harm"},\n'
        '{"prompt": "deep", "category": "self_harm", "x": ' + nested(depth) + ', "s": "a ] string ["},\n'
        '{"prompt": "after", "category": "self_harm"}]'
    )
    array = normalize(source("beavertails_eval", tmp_path / "n.json"))
    assert array.prompts["prompt"].to_list() == ["before", "after"]
    assert reasons(array) == {"n.json:2": f"JSON nested deeper than {MAX_JSON_DEPTH} levels"}
    (tmp_path / "s.json").write_text(
        '{"Insult": [{"prompt": "kept", "type": "Insult"}, ' + nested_objects(depth) + "],\n"
        ' "Mental_Health": ' + nested_objects(depth) + "}"
    )
    groups = normalize(source("safety_prompts", tmp_path / "s.json"))
    assert groups.prompts["prompt"].to_list() == ["kept"]
    assert set(reasons(groups).values()) == {f"JSON nested deeper than {MAX_JSON_DEPTH} levels"}
    assert set(reasons(groups)) == {"s.json:1", "s.json:2 [Mental_Health]"}


def test_nesting_within_the_limit_is_kept(tmp_path):
    (tmp_path / "ok.jsonl").write_text(
        '{"traceid": "t1", "risk_type": "Data_Privacy", "prompt": "p", "x": ' + nested(MAX_JSON_DEPTH - 1) + "}\n"
    )
    assert normalize(source("s_eval", tmp_path / "ok.jsonl")).prompts.height == 1


def test_a_deep_or_broken_answers_file_is_a_file_error_not_a_recursion_error(tmp_path):
    (tmp_path / "q.json").write_text(
        json.dumps([{"id": 1, "category": "Offensiveness", "question": "q", "options": ["a", "b"]}])
    )
    (tmp_path / "a.json").write_text(nested(200_000))
    with pytest.raises(SourceFileError, match=r"answers: .*a\.json: not valid JSON: JSON nested deeper than"):
        normalize(source("safetybench", tmp_path / "q.json", answers=str(tmp_path / "a.json")))


# --- CSV: long fields and stray quotes ------------------------------------------------------------


def test_a_200kb_quoted_csv_field_is_read_and_an_oversized_prompt_quarantined(tmp_path):
    long_answer = 'a long answer, with commas, "quotes" and\nline breaks; ' * 4000
    assert len(long_answer) > 200_000
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerows([["question", "answer"], ["short question", long_answer], ["x" * 200_001, "a"], ["last", "b"]])
    (tmp_path / "long.csv").write_text(buffer.getvalue())
    result = normalize(
        source("generic", tmp_path / "long.csv", columns={"prompt": "question", "response": "answer"}), 8000
    )
    assert result.prompts["prompt"].to_list() == ["short question", "last"]
    assert result.prompts["response"][0] == long_answer
    line = 3 + long_answer.count("\n")
    assert reasons(result) == {f"long.csv:{line}": "prompt has 200001 characters, over the limit of 8000"}


def thousand_rows(stray_at: int, later: dict[int, str]) -> str:
    rows = [f"prompt number {i}" for i in range(1, 1001)]
    rows[stray_at - 1] = '"a stray quote opens this prompt, and nothing closes it'
    for number, row in later.items():
        rows[number - 1] = row
    return "\r\n".join(rows) + "\r\n"


@pytest.mark.parametrize(
    "later",
    [
        {},  # never closed: the quote runs to the end of the file
        {600: 'a "quoted" word'},  # closed by a later quote that text follows
        {600: '"a properly quoted, prompt"'},  # closed by the opening quote of a later quoted field
    ],
)
def test_one_stray_quote_quarantines_its_line_and_every_other_row_is_read(tmp_path, later):
    folder = tmp_path / "xs"
    folder.mkdir()
    (folder / "Insult.csv").write_text(thousand_rows(5, later))
    result = normalize(source("xsafety", folder))
    assert result.rows_in == 1000 and result.prompts.height == 999
    assert list(reasons(result)) == ["Insult.csv:5"]
    assert reasons(result)["Insult.csv:5"].startswith(
        "unbalanced quote: the quoted field of the row starting on line 5 "
    )
    assert result.quarantine["raw"][0].startswith('"a stray quote')
    assert "prompt number 4" in result.prompts["prompt"].to_list()
    assert "prompt number 1000" in result.prompts["prompt"].to_list()
    assert not result.prompts["prompt"].str.contains("\n").any()


def test_a_stray_quote_in_a_csv_with_header_that_closes_cleanly_later_is_caught_by_its_columns(tmp_path):
    body = 'question,answer\nq1,a1\n"q2 stray,a2\nq3,a3\nq4,about 5 feet 3"\nq5,a5\n'
    # the stray quote on line 3 is closed by the inch mark ending line 5: valid CSV, but one row over three
    # lines with one cell where the header has two; line 3 is quarantined and lines 4-6 are read again
    (tmp_path / "h.csv").write_text(body)
    result = normalize(source("generic", tmp_path / "h.csv", columns={"prompt": "question", "response": "answer"}))
    assert result.prompts["prompt"].to_list() == ["q1", "q3", "q4", "q5"]
    assert result.prompts["response"][2] == 'about 5 feet 3"'
    assert reasons(result) == {
        "h.csv:3": "unbalanced quote: the quoted field of the row starting on line 3 runs to line 5 with the wrong "
        "number of columns; the lines after it are read as rows"
    }


def test_legitimate_multiline_quoted_fields_are_not_mistaken_for_stray_quotes(tmp_path):
    (tmp_path / "m.csv").write_text(
        'question,answer\n"line one\nline two, still the question",a1\nq2,"a2 ""quoted"""\n'
    )
    result = normalize(source("generic", tmp_path / "m.csv", columns={"prompt": "question", "response": "answer"}))
    assert result.quarantine.height == 0
    assert result.prompts["prompt"].to_list() == ["line one\nline two, still the question", "q2"]
    assert result.prompts["response"].to_list() == ["a1", 'a2 "quoted"']


# --- sizes: files, zip members, Parquet ------------------------------------------------------------


def test_a_file_over_the_cap_is_refused_from_its_size_before_any_read(tmp_path):
    huge = tmp_path / "huge.jsonl"
    with huge.open("wb") as handle:  # sparse: 20 GiB declared, nothing written
        handle.truncate(20 << 30)
    tracemalloc.start()
    started = time.monotonic()
    error = finishes(lambda: normalize(source("s_eval", huge, max_file_bytes=MiB)))
    elapsed = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert isinstance(error, SourceFileError)
    assert (
        str(error) == f"{KEY}: {huge}: is 21,474,836,480 bytes, over ingest.max_file_bytes (1,048,576 bytes): not read"
    )
    assert elapsed < 5 and peak < 4 * MiB


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_file_whose_size_on_disk_lies_is_stopped_at_the_cap_while_read():
    # /proc files say 0 bytes and hold more: the read itself stops at the cap
    assert Path("/proc/self/status").stat().st_size == 0
    with pytest.raises(SourceFileError, match=r"status: holds more than its size on disk \(0 bytes\), over ingest"):
        normalize(source("s_eval", "/proc/self/status", max_file_bytes=64))
    assert read_capped(io.BytesIO(b"x" * 10), 9) is None and read_capped(io.BytesIO(b"x" * 10), 10) == b"x" * 10


def test_a_zip_bomb_member_is_refused_from_its_declared_size(tmp_path):
    bomb = (s_eval_line("t9", "A" * 1000) * 200_000).encode()  # 200 MB of one repeated line
    path = tmp_path / "bomb.zip"
    path.write_bytes(zipfile_bytes({"good.jsonl": s_eval_line("t1", "kept").encode(), "bomb.jsonl": bomb}))
    assert path.stat().st_size < 1 * MiB
    size = len(bomb)
    del bomb
    tracemalloc.start()
    result = finishes_with(lambda: normalize(source("s_eval", path, max_file_bytes=8 * MiB)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.prompts["prompt"].to_list() == ["kept"]
    assert reasons(result) == {
        "bomb.zip!bomb.jsonl": f"zip member declares {size:,} bytes uncompressed, over ingest.max_file_bytes "
        "(8,388,608 bytes): not read"
    }
    assert peak < 16 * MiB


def finishes_with(call, seconds: float = 60.0):
    result: list = []
    error = finishes(lambda: result.append(call()), seconds)
    if error:
        raise error
    return result[0]


def test_a_zip_member_that_lies_about_its_size_is_never_expanded_past_it(tmp_path):
    data = (s_eval_line("t2", "B" * 1000) * 20_000).encode()  # 20 MB, declared as 1,000 bytes below
    raw = bytearray(zipfile_bytes({"a.jsonl": s_eval_line("t1", "kept").encode(), "liar.jsonl": data}))
    declared = len(data).to_bytes(4, "little")
    assert raw.count(declared) == 2  # the local header and the central directory entry
    raw[:] = raw.replace(declared, (1000).to_bytes(4, "little"))
    (tmp_path / "liar.zip").write_bytes(bytes(raw))
    tracemalloc.start()
    result = normalize(source("s_eval", tmp_path / "liar.zip", max_file_bytes=4 * MiB))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.prompts["prompt"].to_list() == ["kept"]
    assert reasons(result)["liar.zip!liar.jsonl"].startswith("unreadable zip member: ")
    assert peak < 8 * MiB


def test_many_small_members_share_one_cap_for_the_archive(tmp_path):
    members = {f"part{i:02d}.jsonl": s_eval_line(f"t{i}", f"prompt {i} " + "x" * 100_000).encode() for i in range(30)}
    path = tmp_path / "many.zip"
    path.write_bytes(zipfile_bytes(members))
    result = normalize(source("s_eval", path, max_file_bytes=MiB), max_chars=200_000)
    assert result.prompts.height == 10 and result.quarantine.height == 20
    first_refused = reasons(result)["many.zip!part10.jsonl"]
    assert first_refused.startswith("zip member declares 100,") and "and the members before it 1,0" in first_refused


@pytest.mark.parametrize(
    "name", ["/etc/evil.jsonl", "../evil.jsonl", "a/../../evil.jsonl", "a\\..\\evil.jsonl", "C:/evil.jsonl"]
)
def test_zip_members_with_absolute_or_climbing_names_are_refused(tmp_path, name):
    path = tmp_path / "names.zip"
    path.write_bytes(
        zipfile_bytes({"ok.jsonl": s_eval_line("t1", "kept").encode(), name: s_eval_line("t2", "evil").encode()})
    )
    result = normalize(source("s_eval", path))
    assert result.prompts["prompt"].to_list() == ["kept"]
    assert reasons(result) == {f"names.zip!{name}": "zip member name is absolute or climbs out with '..': not read"}


def test_bzip2_and_lzma_zip_members_are_refused(tmp_path):
    path = tmp_path / "methods.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok.jsonl", s_eval_line("t1", "kept"), compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("b.jsonl", s_eval_line("t2", "bz"), compress_type=zipfile.ZIP_BZIP2)
        archive.writestr("l.jsonl", s_eval_line("t3", "lz"), compress_type=zipfile.ZIP_LZMA)
    path.write_bytes(buffer.getvalue())
    result = normalize(source("s_eval", path))
    assert result.prompts["prompt"].to_list() == ["kept"]
    assert reasons(result) == {
        "methods.zip!b.jsonl": "zip member compressed with method 12 (only stored and deflate are read): not read",
        "methods.zip!l.jsonl": "zip member compressed with method 14 (only stored and deflate are read): not read",
    }


def parquet_source(path: Path, max_file_bytes: int) -> SourceConfig:
    return source("generic", path, columns={"prompt": "question"}, max_file_bytes=max_file_bytes)


def test_a_parquet_file_declaring_more_than_the_cap_uncompressed_is_refused(tmp_path):
    frame = pl.DataFrame(
        {"question": [f"q{i}" for i in range(2000)], "padding": [f"{i}" + "P" * 10_000 for i in range(2000)]}
    )
    frame.write_parquet(tmp_path / "bomb.parquet", compression="zstd")
    assert (tmp_path / "bomb.parquet").stat().st_size < MiB
    with pytest.raises(SourceFileError) as info:
        normalize(parquet_source(tmp_path / "bomb.parquet", 4 * MiB))
    assert re.search(
        r"bomb\.parquet: declares 2\d,\d{3},\d{3} bytes uncompressed, over ingest\.max_file_bytes "
        r"\(4,194,304 bytes\): not read",
        str(info.value),
    )
    assert normalize(parquet_source(tmp_path / "bomb.parquet", 64 * MiB)).prompts.height == 2000


def test_a_parquet_dictionary_bomb_is_stopped_while_read_without_expanding(tmp_path):
    # one 1 MB value repeated in 5,000 rows: dictionary-encoded, its declared size is the value once
    import pyarrow as pa
    import pyarrow.parquet as pq

    padding = pa.DictionaryArray.from_arrays(pa.array([0] * 5000, pa.int32()), pa.array(["P" * MiB]))
    table = pa.table({"question": [f"q{i}" for i in range(5000)], "padding": padding})
    pq.write_table(table, tmp_path / "dict.parquet", compression="zstd")
    assert (tmp_path / "dict.parquet").stat().st_size < MiB
    tracemalloc.start()
    error = finishes(lambda: normalize(parquet_source(tmp_path / "dict.parquet", 16 * MiB)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert isinstance(error, SourceFileError)
    assert str(error).endswith(
        "dict.parquet: expands past the cap in rows 1-64, over ingest.max_file_bytes (16,777,216 bytes): not read"
    )
    assert peak < 48 * MiB  # 5,000 copies would be 5 GB


# --- what is opened: links, devices, FIFOs, sockets -------------------------------------------------


def test_a_symlink_leaving_the_data_folder_is_refused_and_its_target_never_read(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("SECRET-TOKEN-123 should never be ingested\n")
    folder = tmp_path / "xs"
    (folder / "sub").mkdir(parents=True)
    (folder / "Insult.csv").write_text("an ordinary prompt\n")
    (folder / "sub" / "Mental_Health.csv").write_text("a prompt in a subfolder\n")
    (folder / "Absolute.csv").symlink_to(outside / "secret.csv")
    (folder / "Relative.csv").symlink_to("../outside/secret.csv")
    (folder / "hop.txt").symlink_to("Absolute.csv")
    (folder / "Chained.csv").symlink_to("hop.txt")
    (folder / "Mental_Health.csv").symlink_to("sub/Mental_Health.csv")  # stays inside: read
    (folder / "Broken.csv").symlink_to("nowhere.csv")
    result = normalize(source("xsafety", folder))
    assert sorted(result.prompts["prompt"]) == ["a prompt in a subfolder", "an ordinary prompt"]
    found = reasons(result)
    target = (outside / "secret.csv").resolve()
    for name in ("Absolute.csv", "Relative.csv", "Chained.csv"):
        assert found[name] == f"symbolic link to {target}, outside the folder {folder.resolve()}: not read"
    assert found["Broken.csv"].startswith("broken symbolic link")
    assert len(found) == 4
    everything = pl.concat([result.prompts.select(text="prompt"), result.quarantine.select(text="raw")])
    assert not everything["text"].str.contains("SECRET").any()
    # the raw asset's content hash never opens it either
    inputs = source_input_files(source("xsafety", folder))
    assert target not in inputs and all(p.resolve().is_relative_to(folder.resolve()) for p in inputs)
    before = content_version(inputs)
    (outside / "secret.csv").write_text("changed\n")
    assert content_version(source_input_files(source("xsafety", folder))) == before


def test_a_configured_data_folder_may_itself_be_a_link(tmp_path):
    real = tmp_path / "disk" / "xsafety"
    real.mkdir(parents=True)
    (real / "Insult.csv").write_text("an ordinary prompt\n")
    (tmp_path / "xs").symlink_to(real)
    assert normalize(source("xsafety", tmp_path / "xs")).prompts["prompt"].to_list() == ["an ordinary prompt"]


DEVICE_READERS = [
    ("s_eval", "data.jsonl", {}),
    ("s_eval", "data.zip", {}),
    ("beavertails_eval", "data.json", {}),
    ("xstest", "data.csv", {}),
    ("generic", "data.parquet", {"columns": {"prompt": "q"}}),
    ("xsafety", "data.csv", {}),
]


@pytest.mark.parametrize(("reader", "name", "options"), DEVICE_READERS)
def test_a_configured_device_is_refused_at_once(tmp_path, reader, name, options):
    for device, kind in (("/dev/zero", "a character device"), ("/dev/urandom", "a character device")):
        link = tmp_path / name  # a configured link is followed, and what it points at checked
        link.unlink(missing_ok=True)
        link.symlink_to(device)
        # the generic reader picks the format by the name's extension: the link has one, the device not
        for path in (link,) if reader == "generic" else (Path(device), link):
            error = finishes(lambda p=path: normalize(source(reader, p, **options)), seconds=10)
            assert isinstance(error, SourceFileError), error
            assert str(error).startswith(f"{KEY}: {path}: is {kind}, expected a regular file")
    error = finishes(lambda: source_input_files(source(reader, "/dev/zero")), seconds=10)
    assert isinstance(error, SourceFileError) and "is a character device" in str(error)
    error = finishes(lambda: content_version([Path("/dev/zero")]), seconds=10)
    assert isinstance(error, SourceFileError) and "is a character device" in str(error)


def test_a_device_as_safetybench_answers_file_is_refused(tmp_path):
    (tmp_path / "q.json").write_text(
        json.dumps([{"id": 1, "category": "Offensiveness", "question": "q", "options": ["a", "b"]}])
    )
    error = finishes(lambda: normalize(source("safetybench", tmp_path / "q.json", answers="/dev/zero")), seconds=10)
    assert isinstance(error, SourceFileError) and str(error).startswith(
        f"{KEY}.answers: /dev/zero: is a character device"
    )


def test_fifos_and_sockets_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    folder = tmp_path / "xs"
    folder.mkdir()
    (folder / "Insult.csv").write_text("an ordinary prompt\n")
    os.mkfifo(folder / "Pipe.csv")
    (folder / "Linked.csv").symlink_to("Pipe.csv")
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(str(folder / "Socket.csv"))
        error = finishes(lambda: normalize(source("s_eval", fifo)), seconds=10)
        assert isinstance(error, SourceFileError) and str(error) == (
            f"{KEY}: {fifo}: is a FIFO (named pipe), expected a regular file: not read"
        )
        result = finishes_with(lambda: normalize(source("xsafety", folder)), seconds=10)
        assert result.prompts["prompt"].to_list() == ["an ordinary prompt"]
        assert reasons(result) == {
            "Linked.csv": "is a FIFO (named pipe), expected a regular file: not read",
            "Pipe.csv": "is a FIFO (named pipe), expected a regular file: not read",
            "Socket.csv": "is a socket, expected a regular file: not read",
        }
        assert finishes(lambda: content_version(source_input_files(source("xsafety", folder))), seconds=10) is None
    finally:
        listener.close()
        for pipe in (fifo, folder / "Pipe.csv"):  # a reader stuck on a FIFO (the bug) is let go
            try:
                os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass


# --- counts and general robustness ------------------------------------------------------------------


def test_row_counts_add_up_in_the_asset_metadata_for_a_file_of_every_problem(tmp_path):
    lines = [
        s_eval_line("t1", "kept one"),
        '{"traceid": "t2", "risk_type": "Data_Privacy", "prompt": "a", "prompt": "b"}\n',
        s_eval_line("t3", "bidi \u202e here"),
        '{"traceid": "t4", "risk_type": "Data_Privacy", "prompt": "p", "x": ' + nested(100_000) + "}\n",
        "\n",
        s_eval_line("t6", "nul \u0000 here"),
        '{"traceid": "t7", "risk_type": "Data_Privacy", "prompt": \n',
        s_eval_line("t8", "kept two"),
    ]
    path = tmp_path / "mix.jsonl"
    path.write_text("".join(lines))
    result = normalize(source("s_eval", path))
    assert result.rows_in == len(path.read_text().splitlines()) == 8
    counts = ingest_counts(result)
    assert (counts["rows_in"], counts["rows_normalized"], counts["rows_quarantined"]) == (8, 2, 6)
    assert row_balance_result(AssetKey("hostile"), result).passed
    assert sorted(reasons(result)) == [f"mix.jsonl:{n}" for n in (2, 3, 4, 5, 6, 7)]


def mutations(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        position = rng.randrange(len(data) + 1)
        choice = rng.random()
        if choice < 0.5:
            data[position:position] = rng.choice(
                [b'"', b"[", b"{", b"\x00", b"\xff", b"\n", b",", b"]", b"\\", b"\xe2\x80\xae"]
            )
        elif choice < 0.7:
            del data[position : position + rng.randint(1, 20)]
        elif choice < 0.85:
            data[position:position] = b"[" * rng.randint(1, 3000)
        else:
            data = data[:position]
    return bytes(data)


@pytest.mark.parametrize(
    ("reader", "fixture", "name", "options"),
    [
        ("s_eval", None, "s.jsonl", {}),
        ("cvalues_comparison", FIXTURES / "cvalues_comparison.jsonl", "c.jsonl", {}),
        ("sharegpt", FIXTURES / "sharegpt.json", "g.json", {}),
        ("safety_prompts", FIXTURES / "safety_prompts/typical_safety_scenarios.json", "t.json", {}),
        ("generic", FIXTURES / "generic.csv", "g.csv", {"columns": {"prompt": "question", "response": "answer"}}),
    ],
)
def test_mutated_files_give_a_file_error_or_balanced_rows_never_another_exception(
    tmp_path, reader, fixture, name, options
):
    original = (
        fixture.read_bytes() if fixture else "".join(s_eval_line(f"t{i}", f"问题 {i}") for i in range(20)).encode()
    )
    rng = random.Random(f"{reader}-24")
    outcomes = {"rows": 0, "file errors": 0}
    for _ in range(60):
        (tmp_path / name).write_bytes(mutations(original, rng))
        try:
            normalize(source(reader, tmp_path / name, **options))
            outcomes["rows"] += 1
        except SourceFileError as exc:
            assert str(exc).startswith(f"{KEY}: {tmp_path / name}: ")
            outcomes["file errors"] += 1
    assert outcomes["rows"] > 0


# --- numbers JSON cannot hold, lone surrogates --------------------------------------------------------------------

HUGE = "9" * (MAX_INT_DIGITS + 1000)


def json_files(tmp_path: Path, records: list[str]) -> list[tuple[SourceConfig, str]]:
    """The same records (JSON object texts, prompt in field 'prompt', category 'animal_abuse') as JSON Lines, a JSON
    array, a JSON object of arrays and a zip member: each as a source, with the location prefix of its records (in
    JSON Lines the first record is on line 1, in the JSON files on line 2)."""
    lines = "\n".join(records) + "\n"
    (tmp_path / "r.jsonl").write_text(lines)
    (tmp_path / "r.json").write_text("[\n" + ",\n".join(records) + "\n]\n")
    (tmp_path / "g.json").write_text('{"Insult": [\n' + ",\n".join(records) + "\n]}\n")
    (tmp_path / "r.zip").write_bytes(zipfile_bytes({"m.jsonl": lines.encode()}))
    columns = {"prompt": "prompt"}
    return [
        (source("generic", tmp_path / "r.jsonl", columns=columns), "r.jsonl:"),
        (source("beavertails_eval", tmp_path / "r.json"), "r.json:"),
        (source("safety_prompts", tmp_path / "g.json"), "g.json:"),
        (source("generic", tmp_path / "r.zip", columns=columns), "r.zip!m.jsonl:"),
    ]


def record(prompt: str, extra: str = "") -> str:
    return f'{{"prompt": "{prompt}", "category": "animal_abuse"{extra}}}'


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (HUGE, f"integer with {len(HUGE):,} digits (at most {MAX_INT_DIGITS:,} are read)"),
        ("-" + HUGE, f"integer with {len(HUGE):,} digits (at most {MAX_INT_DIGITS:,} are read)"),
        (f'[1, {{"deep": [{HUGE}]}}]', f"integer with {len(HUGE):,} digits (at most {MAX_INT_DIGITS:,} are read)"),
        ("NaN", "NaN is not a JSON number"),
        ("-Infinity", "-Infinity is not a JSON number"),
        ("[Infinity]", "Infinity is not a JSON number"),
        ("1e999", "number 1e999 is out of the range of a float (infinity is not JSON)"),
        ("-2.5E+400", "number -2.5E+400 is out of the range of a float (infinity is not JSON)"),
    ],
)
def test_numbers_json_cannot_hold_quarantine_their_record_and_the_rest_is_read(tmp_path, value, reason):
    records = [record("first"), record("odd", f', "n": {value}'), record("third", f', "n": {"9" * MAX_INT_DIGITS}')]
    for config, prefix in json_files(tmp_path, records):
        result = normalize(config)
        assert result.prompts["prompt"].to_list() == ["first", "third"], prefix
        assert reasons(result) == {f"{prefix}{2 if prefix.endswith('.jsonl:') else 3}": reason}, prefix
        for meta in result.prompts["meta"]:  # what is kept is strict JSON
            json.loads(meta, parse_constant=lambda name: pytest.fail(f"{name} in {meta[:80]}"))


def test_a_huge_integer_in_s_eval_ext_or_a_safetybench_answers_file_is_a_clear_problem(tmp_path):
    (tmp_path / "s.jsonl").write_text(s_eval_line("t1", "fine") + s_eval_line("t2", "odd", ext=f'{{"n": {HUGE}}}'))
    assert reasons(normalize(source("s_eval", tmp_path / "s.jsonl"))) == {
        "s.jsonl:2": f"field 'ext': integer with {len(HUGE):,} digits (at most {MAX_INT_DIGITS:,} are read)"
    }
    (tmp_path / "q.json").write_text('[{"id": 1, "category": "Offensiveness", "question": "q", "options": ["a", "b"]}]')
    (tmp_path / "answers.json").write_text(f'{{"1": {{"answer": {HUGE}}}}}')
    with pytest.raises(SourceFileError, match=r"answers: .*answers.json: not valid JSON: integer with"):
        normalize(source("safetybench", tmp_path / "q.json", answers=str(tmp_path / "answers.json")))


def test_a_nan_float_from_parquet_quarantines_its_row(tmp_path):
    pl.DataFrame({"question": ["a", "b", "c"], "score": [1.0, float("nan"), float("-inf")]}).write_parquet(
        tmp_path / "f.parquet"
    )
    result = normalize(parquet_source(tmp_path / "f.parquet", 4 * MiB))
    assert result.prompts["prompt"].to_list() == ["a"] and json.loads(result.prompts["meta"][0]) == {"score": 1.0}
    reason = "a number in the record is NaN or infinite, which JSON cannot hold"
    assert reasons(result) == {"f.parquet:row 2": reason, "f.parquet:row 3": reason}


def test_a_lone_surrogate_escape_is_named_as_such_and_a_pair_is_kept(tmp_path):
    records = [record("pair \\ud83d\\ude00"), record("lone \\ud800 high"), record("lone \\udfff low"), record("ok")]
    lone = "lone surrogate escape (\\ud800-\\udfff without its pair) in a string: not valid Unicode"
    for config, prefix in json_files(tmp_path, records):
        result = normalize(config)
        assert result.prompts["prompt"].to_list() == ["pair \U0001f600", "ok"], prefix
        first = 2 if prefix.endswith(".jsonl:") else 3
        assert reasons(result) == {f"{prefix}{first}": lone, f"{prefix}{first + 1}": lone}, prefix
    # bytes that are not UTF-8 keep their own reason
    (tmp_path / "b.json").write_bytes(b'[{"prompt": "a\xff", "category": "animal_abuse"}]')
    assert reasons(normalize(source("beavertails_eval", tmp_path / "b.json"))) == {
        "b.json:1": "non-UTF-8 bytes in a text field"
    }


# --- stepping over a refused record: one pass ---------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("escapes", [b'\\"', b"\\\\", b'x\\"'])
def test_an_unclosed_string_after_deep_nesting_is_refused_in_one_pass(tmp_path, escapes):
    # 4 MB: the earlier regex rescan from every quote took 9.5 s for 40 KB, so hours here (pytest-timeout fails it)
    data = b"[" + b"[" * 3000 + b'"' + escapes * (4 * MiB // len(escapes))
    (tmp_path / "q.json").write_bytes(data)
    with pytest.raises(SourceFileError, match="not valid JSON: unterminated string"):
        normalize(source("beavertails_eval", tmp_path / "q.json"))


@pytest.mark.timeout(60)
def test_many_refused_records_are_each_stepped_over_once(tmp_path):
    deep = "[" * 3000 + '"a \\" ] } [ {"' + "]" * 3000
    records = [deep if i % 2 else record(f"p{i}") for i in range(2000)]
    (tmp_path / "m.json").write_text("[" + ",\n".join(records) + "]")
    result = normalize(source("beavertails_eval", tmp_path / "m.json"))
    assert result.prompts.height == 1000 and set(reasons(result).values()) == {
        f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    }


# --- duplicate names ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reader", "header", "named"),
    [
        ("xstest", "id,prompt,type,label,prompt", "'prompt'"),
        ("generic", "question,answer,answer,question", "'answer', 'question'"),
        ("generic", "question,,", "''"),
    ],
)
def test_a_csv_header_that_repeats_a_column_is_a_file_error(tmp_path, reader, header, named):
    cells = header.count(",") + 1
    (tmp_path / "d.csv").write_text(
        header + "\n" + ",".join(["1", "benign", "homonyms", "safe", "EVIL"][:cells]) + "\n"
    )
    with pytest.raises(SourceFileError) as info:
        normalize(source(reader, tmp_path / "d.csv", columns={"prompt": "question"}))
    assert str(info.value) == f"{KEY}: {tmp_path / 'd.csv'}: header line 1 repeats column {named}"


def test_a_zip_with_two_members_of_one_name_is_a_file_error(tmp_path):
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name it writes
        archive.writestr("a.jsonl", b'{"p": "one"}\n')
        archive.writestr("b.jsonl", b'{"p": "two"}\n')
        archive.writestr("a.jsonl", b'{"p": "hidden"}\n')
    (tmp_path / "dup.zip").write_bytes(buffer.getvalue())
    with pytest.raises(SourceFileError) as info:
        normalize(source("generic", tmp_path / "dup.zip", columns={"prompt": "p"}))
    assert str(info.value) == f"{KEY}: {tmp_path / 'dup.zip'}: zip archive holds two members named 'a.jsonl'"


# --- Parquet: nested columns that expand --------------------------------------------------------------------------


def nested_bomb(path: Path, kind: str) -> None:
    """A dictionary-encoded 1 MiB value in every row's map or list, or in a list in a struct (300 rows), or 1,000
    times in one row's list; built from the one value, so that this process never holds the copies either."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    uses = 1000 if kind == "one row" else 300
    values = pa.DictionaryArray.from_arrays(pa.array([0] * uses, pa.int32()), pa.array(["A" * MiB]))
    offsets = pa.array([0, *[uses] * 300] if kind == "one row" else range(301), pa.int32())
    if kind == "map":
        column = pa.MapArray.from_arrays(offsets, pa.array(["k"] * uses), values)
    else:
        column = pa.ListArray.from_arrays(offsets, values)
    if kind == "struct":
        column = pa.StructArray.from_arrays([column], names=["s"])
    table = pa.table({"question": [f"q{i}" for i in range(300)], "m": column})
    pq.write_table(table, path, compression="zstd")


PEAK_PROBE = """
import json, sys
from pathlib import Path
from madef_assets.defs.sources.normalize import normalize_source
from madef_assets.settings import SourceConfig, SourceFile
path = Path(sys.argv[1])
config = SourceConfig(name="hostile", reader="generic", known_categories=None, columns={"prompt": "question"},
    files=(SourceFile(path=path, config_key="k", lang="en"),), description="", max_file_bytes=5 << 20)
try:
    normalize_source(config, 4000)
    outcome = "read"
except ValueError as exc:
    outcome = f"{type(exc).__name__}: {exc}"
# VmHWM: this process's peak resident memory (ru_maxrss would report the parent's, inherited across exec)
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"outcome": outcome, "peak_rss": int(peak.split()[1]) * 1024}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize("kind", ["map", "list", "struct", "one row"])
def test_a_parquet_bomb_in_a_nested_column_is_refused_before_it_expands(tmp_path, kind):
    nested_bomb(tmp_path / "n.parquet", kind)
    assert (tmp_path / "n.parquet").stat().st_size < 64 * 1024  # 300 MB of values
    probe = subprocess.run(
        [sys.executable, "-c", PEAK_PROBE, str(tmp_path / "n.parquet")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    assert (
        report["outcome"].startswith("SourceFileError: k: ")
        and "n.parquet: expands past the cap in rows 1-64" in (report["outcome"])
    ), report
    assert report["peak_rss"] < 400 * MiB, report  # the process with its imports is ~120 MB; expanded: over 1.5 GB


def test_a_parquet_file_of_too_many_values_is_refused_from_its_metadata(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # a million list entries in one row: run-length encoded, a few KB on disk
    table = pa.table({"question": ["q"], "m": pa.array([[0] * 1_000_000], type=pa.list_(pa.int8()))})
    pq.write_table(table, tmp_path / "v.parquet", compression="zstd")
    with pytest.raises(SourceFileError, match=r"holds 1,000,001 values \(8 bytes each at least\), over ingest"):
        normalize(parquet_source(tmp_path / "v.parquet", 4 * MiB))


def test_nested_parquet_columns_within_the_cap_are_kept_in_meta(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "question": ["a", "b"],
            "tags": pa.array([[("k", "v")], []], type=pa.map_(pa.string(), pa.string())),
            "turns": pa.array([[{"from": "human", "value": "hi"}], None]),
        }
    )
    pq.write_table(table, tmp_path / "ok.parquet")
    result = normalize(parquet_source(tmp_path / "ok.parquet", 4 * MiB))
    assert [json.loads(m) for m in result.prompts["meta"]] == [
        {"tags": [["k", "v"]], "turns": [{"from": "human", "value": "hi"}]},
        {"tags": [], "turns": None},
    ]
