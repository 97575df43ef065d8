"""Building a backend from a role's configuration, and the identity that keys its answers in the ledger.

The identity comes from the configuration and the checkpoint folder alone, so the ledger is consulted
before any backend exists: a fully cached step builds nothing and loads no model. Nothing here imports
Dagster, so the GPU check runs these paths on a bare machine.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from madef_assets.llm.types import Backend

LOCAL_BACKENDS = ("transformers", "vllm")


# Backends built in this process, by backend name (run metadata and tests read it).
constructed: Counter[str] = Counter()


def _check_backend(backend: str) -> None:
    if backend != "openai" and backend not in LOCAL_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: transformers, openai or vllm")


def build_backend(backend: str, model: str, options: dict[str, Any], models_dir: Path) -> Backend:
    """A backend for one role or candidate. Local backends load only the tokenizer here; their weights
    load on first use and are shared by every backend over the same folder (llm/engines.py)."""
    _check_backend(backend)
    constructed[backend] += 1
    if backend == "openai":
        from madef_assets.llm.openai_backend import OpenAIBackend

        return OpenAIBackend.from_options(model, options)
    from madef_assets.llm.model_files import resolve_model_path

    path = resolve_model_path(model, models_dir)
    if backend == "transformers":
        from madef_assets.llm.transformers_backend import TransformersBackend

        return TransformersBackend(path, model, **options)
    from madef_assets.llm.vllm_backend import VLLMBackend

    return VLLMBackend(path, model, **options)


def backend_identity(backend: str, model: str, options: dict[str, Any], models_dir: Path) -> dict[str, Any]:
    """What `build_backend(...).fingerprint()` returns, without building the backend."""
    _check_backend(backend)
    if backend == "openai":
        from madef_assets.llm.openai_backend import OpenAIBackend

        return OpenAIBackend.identity(model, options)
    from madef_assets.llm.local_model import VLLM_IDENTITY, local_identity
    from madef_assets.llm.model_files import resolve_model_path

    extra = VLLM_IDENTITY if backend == "vllm" else {}
    return local_identity(model, resolve_model_path(model, models_dir), options.get("chat_template", "auto"), **extra)
