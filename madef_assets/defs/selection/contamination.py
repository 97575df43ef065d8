"""Contamination: long n-grams shared between training prompts and evaluation prompts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from madef_assets.defs.sources.benchmark_files import MCQ_SPLITS, load_gsm8k, load_humaneval, load_mcq_benchmark
from madef_assets.defs.text import ngrams
from madef_assets.settings import GeneralConfig


def contaminated(
    train: Iterable[tuple[str, str]], evaluation: Iterable[str], zh_chars: int, en_words: int
) -> list[tuple[str, str]]:
    """(train id, shared n-gram) for every training prompt sharing an n-gram with an evaluation prompt."""
    reference: set[str] = set()
    for text in evaluation:
        reference |= ngrams(text, zh_chars, en_words)
    leaks = []
    for key, text in train:
        shared = ngrams(text, zh_chars, en_words) & reference
        if shared:
            leaks.append((key, min(shared)[2:]))
    return leaks


def contaminated_by_reference(
    train: Iterable[tuple[str, str]], references: Mapping[str, Iterable[str]], zh_chars: int, en_words: int
) -> list[tuple[str, str, str]]:
    """(train id, reference name, shared n-gram) for every training prompt sharing an n-gram with a prompt of
    a named reference set (an evaluation source, a general-capability benchmark); one row per prompt, the
    first reference (by name) that it leaks from."""
    grams_by_reference: dict[str, set[str]] = {}
    for name, texts in sorted(references.items()):
        grams: set[str] = set()
        for text in texts:
            grams |= ngrams(text, zh_chars, en_words)
        grams_by_reference[name] = grams
    leaks = []
    for key, text in train:
        own = ngrams(text, zh_chars, en_words)
        for name, grams in grams_by_reference.items():
            shared = own & grams
            if shared:
                leaks.append((key, name, min(shared)[2:]))
                break
    return leaks


def general_eval_questions(config: GeneralConfig) -> dict[str, list[str]]:
    """Every question of the configured general-capability benchmarks (evaluation.general): gsm8k problems,
    MMLU / CMMLU / C-Eval questions of every split present (few-shot dev questions included), HumanEval
    prompts. A configured file that is missing raises: the contamination gate must not pass on less. Every
    split with answers (MCQ_SPLITS) is read where the archive has it."""
    import json
    import zipfile

    data_dir = config.data_dir
    questions: dict[str, list[str]] = {}
    if config.gsm8k:
        questions["gsm8k"] = [item.question for item in load_gsm8k(data_dir / config.gsm8k.file)]
    for benchmark, splits in MCQ_SPLITS.items():
        spec = config.mcq().get(benchmark)
        if spec is None:
            continue
        zip_path, mapping_path = data_dir / spec.zip, data_dir / spec.mapping
        zipfile.ZipFile(zip_path).close()  # a missing or broken archive fails here, with its path
        subjects = list(json.loads(mapping_path.read_text(encoding="utf-8")))
        texts: list[str] = []
        for split in splits:
            for subject in subjects:
                try:
                    items = load_mcq_benchmark(benchmark, zip_path, mapping_path, split, subjects=[subject])
                except ValueError as exc:
                    if "has no member" in str(exc):  # a sample archive holds some subjects' splits only
                        continue
                    raise
                texts += [item.question for item in items]
        questions[benchmark] = texts
    if config.humaneval:
        questions["humaneval"] = [item.prompt for item in load_humaneval(data_dir / config.humaneval.file)]
    return questions
