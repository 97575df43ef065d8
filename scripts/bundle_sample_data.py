"""Copy the small, licensed samples that madef bundles from ../shared/data into data/.

Run once by a maintainer (`python scripts/bundle_sample_data.py ../shared/data`); the output is
committed so that a clone runs without the shared folder. Samples are deterministic: the first N
rows of each category, in file order, so a re-run reproduces the same bytes.
"""

import csv
import gzip
import io
import json
import shutil
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

PER_CATEGORY = {"s_eval_base": 40, "s_eval_attack": 30, "xsafety": 30, "general_sft": 200}
GENERAL_EVAL = {"gsm8k": 60, "humaneval": 20, "mcq_test": 20}
# Per benchmark: sample subjects, and (split kept whole, split cut to GENERAL_EVAL["mcq_test"] rows,
# member path of a subject's split file). ceval's test split has no answers, so val stands in for it.
MCQ_SAMPLES = {
    "mmlu": (
        ("abstract_algebra", "high_school_geography", "college_medicine", "us_foreign_policy"),
        "dev",
        "test",
        "data/{split}/{subject}_{split}.csv",
    ),
    "cmmlu": (
        ("high_school_geography", "college_medicine", "chinese_foreign_policy", "elementary_mathematics"),
        "dev",
        "test",
        "{split}/{subject}.csv",
    ),
    "ceval": (
        ("high_school_geography", "clinical_medicine", "logic", "computer_network"),
        "dev",
        "val",
        "{split}/{subject}_{split}.csv",
    ),
}
ZIP_DATE = (2025, 4, 12, 14, 0, 0)


def copy_license(src: Path, dst: Path, note: str) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("LICENSE", "LICENSE.MMLU"):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    source = (src / "SOURCE.txt").read_text(encoding="utf-8")
    (dst / "SOURCE.txt").write_text(source.rstrip() + "\n\nBundled in madef: " + note + "\n", encoding="utf-8")


def first_per_key(lines: list[str], key, n: int) -> list[str]:
    kept, counts = [], defaultdict(int)
    for line in lines:
        k = key(json.loads(line))
        if counts[k] < n:
            counts[k] += 1
            kept.append(line)
    return kept


def csv_records(text: str, has_header: bool) -> tuple[str, list[str]]:
    """Split CSV text into (header, records), each record its original text (quoted newlines and
    line endings included), so that a sample keeps the source bytes."""
    lines = io.StringIO(text, newline="\n").readlines()
    reader = csv.reader(lines)
    records, start = [], 0
    for _ in reader:
        records.append("".join(lines[start : reader.line_num]))
        start = reader.line_num
    if has_header:
        return records[0], records[1:]
    return "", records


def bundle_general_eval(shared: Path, out: Path) -> None:
    """GSM8K, HumanEval and MMLU/CMMLU/C-Eval samples under out/general_eval."""
    src, out = shared / "general_eval", out / "general_eval"

    dst = out / "gsm8k"
    copy_license(src / "gsm8k", dst, f"first {GENERAL_EVAL['gsm8k']} lines of test.jsonl, bytes unchanged.")
    lines = (src / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (dst / "test_sample.jsonl").write_text("".join(lines[: GENERAL_EVAL["gsm8k"]]), encoding="utf-8")

    dst = out / "humaneval"
    copy_license(
        src / "humaneval",
        dst,
        f"first {GENERAL_EVAL['humaneval']} problems of HumanEval.jsonl.gz, lines unchanged, re-gzipped with mtime 0.",
    )
    lines = gzip.decompress((src / "humaneval" / "HumanEval.jsonl.gz").read_bytes()).splitlines(keepends=True)
    (dst / "HumanEval_sample.jsonl.gz").write_bytes(
        gzip.compress(b"".join(lines[: GENERAL_EVAL["humaneval"]]), mtime=0)
    )

    for name, (subjects, full_split, cut_split, member) in MCQ_SAMPLES.items():
        dst = out / name
        copy_license(
            src,
            dst,
            f"{name}.zip cut to subjects {', '.join(subjects)}: all {full_split} rows and the "
            f"first {GENERAL_EVAL['mcq_test']} {cut_split} rows of each, CSV bytes unchanged, same member "
            "paths, re-zipped; mapping.json restricted to those subjects.",
        )
        if (src / name / "LICENSE.MMLU").exists():
            shutil.copy2(src / name / "LICENSE.MMLU", dst / "LICENSE.MMLU")
        mapping = json.loads((src / name / "mapping.json").read_text(encoding="utf-8"))
        (dst / "mapping.json").write_text(
            json.dumps({s: mapping[s] for s in subjects}, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
        with (
            zipfile.ZipFile(src / name / f"{name}.zip") as full,
            zipfile.ZipFile(dst / f"{name}_sample.zip", "w") as sample,
        ):
            for split, limit in ((full_split, None), (cut_split, GENERAL_EVAL["mcq_test"])):
                for subject in subjects:
                    path = member.format(split=split, subject=subject)
                    header, records = csv_records(full.read(path).decode("utf-8"), has_header=name != "mmlu")
                    info = zipfile.ZipInfo(path, date_time=ZIP_DATE)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    sample.writestr(info, header + "".join(records[:limit]))


def bundle(shared: Path, out: Path) -> None:
    s_eval = shared / "s_eval"
    zh = (s_eval / "base_risk_zh_full.jsonl").read_text(encoding="utf-8").splitlines()
    zh_kept = first_per_key(zh, lambda r: r["risk_type"], PER_CATEGORY["s_eval_base"])
    zh_ids = {json.loads(line)["traceid"] for line in zh_kept}
    en = (s_eval / "base_risk_en_full.jsonl").read_text(encoding="utf-8").splitlines()
    en_kept = [line for line in en if json.loads(json.loads(line)["ext"]).get("from_traceid") in zh_ids]
    with zipfile.ZipFile(s_eval / "attack_zh_small.jsonl.zip") as archive:
        attack = archive.read("S-Eval_attack_zh_small.jsonl").decode("utf-8").splitlines()
    attack_kept = first_per_key(attack, lambda r: json.loads(r["ext"])["category"], PER_CATEGORY["s_eval_attack"])
    dst = out / "s_eval"
    copy_license(
        s_eval,
        dst,
        "first 40 base-risk zh prompts per risk type, their en translations "
        "(ext.from_traceid), and the first 30 attack prompts per attack method, re-zipped.",
    )
    (dst / "base_risk_zh_sample.jsonl").write_text("\n".join(zh_kept) + "\n", encoding="utf-8")
    (dst / "base_risk_en_sample.jsonl").write_text("\n".join(en_kept) + "\n", encoding="utf-8")
    with zipfile.ZipFile(dst / "attack_zh_sample.jsonl.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("S-Eval_attack_zh_sample.jsonl", date_time=(2025, 4, 12, 14, 0, 0))
        archive.writestr(info, "\n".join(attack_kept) + "\n")

    dst = out / "xsafety"
    copy_license(
        shared / "xsafety", dst, "first 30 rows of every zh and en CSV, bytes unchanged (UTF-8 BOM, CRLF, headerless)."
    )
    for lang in ("zh", "en"):
        (dst / lang).mkdir(parents=True, exist_ok=True)
        for csv_path in sorted((shared / "xsafety" / lang).glob("*.csv")):
            raw = csv_path.read_bytes()
            rows = raw.split(b"\r\n")
            (dst / lang / csv_path.name).write_bytes(b"\r\n".join(rows[: PER_CATEGORY["xsafety"]]) + b"\r\n")

    for name in ("safetybench", "cvalues", "beavertails_eval", "safety_prompts"):
        dst = out / name
        copy_license(shared / name, dst, "files copied whole.")
        for path in (shared / name).iterdir():
            if path.name not in ("LICENSE", "SOURCE.txt"):
                shutil.copy2(path, dst / path.name)

    dst = out / "pku_saferlhf"
    copy_license(shared / "pku_saferlhf_sample", dst, "file copied whole.")
    shutil.copy2(shared / "pku_saferlhf_sample" / "preference_train.json", dst / "preference_train.json")

    dst = out / "general_sft"
    copy_license(shared / "general_sft", dst, "first 200 records of each alpaca demo file.")
    for name in ("alpaca_zh_demo.json", "alpaca_en_demo.json"):
        records = json.loads((shared / "general_sft" / name).read_text(encoding="utf-8"))
        (dst / name).write_text(
            json.dumps(records[: PER_CATEGORY["general_sft"]], ensure_ascii=False, indent=2) + "\n",
            encoding="utf-8",
        )

    bundle_general_eval(shared, out)


if __name__ == "__main__":
    bundle(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"), Path("data"))
