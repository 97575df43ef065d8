"""Loaded local models, one per weights per process, shared by every role and candidate that uses them.

A role or candidate is a view over an engine (its own chat-template use, batch size, sampling); the
engine (transformers weights, a vLLM `LLM`) is loaded on first use, kept here, and released when the
GPU policy says so (`gpu.release` in the profile) or before training needs the GPU.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Key = tuple[Any, ...]


@dataclass
class _Loaded:
    engine: Any
    options: dict[str, Any]
    on_gpu: bool
    close: Callable[[Any], None]


class EngineRegistry:
    """Engines by key (backend, weights path, what changes the loaded weights). `loads` and `releases`
    count per backend name what happened in this process, for run metadata and tests."""

    def __init__(self) -> None:
        self._loaded: dict[Key, _Loaded] = {}
        self._lock = threading.RLock()
        self.loads: Counter[str] = Counter()
        self.releases: Counter[str] = Counter()

    def get(
        self, key: Key, options: dict[str, Any], load: Callable[[], Any], close: Callable[[Any], None], on_gpu: bool
    ) -> Any:
        """The engine for `key`, loaded with `load()` if it is not loaded yet. Loading the same weights
        again with other engine options would hold two copies, so that is an error, not a second engine."""
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is None:
                loaded = _Loaded(load(), dict(options), on_gpu, close)
                self._loaded[key] = loaded
                self.loads[key[0]] += 1
            elif loaded.options != options:
                raise ValueError(
                    f"{key[0]} engine for {key[1]} is already loaded with options {loaded.options}; another role or "
                    f"candidate asks for {options}. Give every use of these weights the same engine options."
                )
            return loaded.engine

    def is_loaded(self, key: Key) -> bool:
        return key in self._loaded

    def loaded_keys(self, gpu_only: bool = False) -> list[Key]:
        with self._lock:
            return [k for k, v in self._loaded.items() if v.on_gpu or not gpu_only]

    def release(self, key: Key | None = None, gpu_only: bool = False) -> int:
        """Close one engine (key) or every engine (on the GPU only, with gpu_only); returns how many."""
        # Under the lock: no other thread loads an engine while one is shutting down (vLLM's shutdown
        # tears down process-wide distributed state).
        with self._lock:
            keys = [key] if key is not None else self.loaded_keys(gpu_only)
            closing = [(k, self._loaded.pop(k)) for k in keys if k in self._loaded]
            errors = []
            for k, loaded in closing:  # every engine is closed, even after one fails to
                try:
                    loaded.close(loaded.engine)
                except Exception as exc:
                    errors.append(exc)
                loaded.engine = None  # the last reference: what it held can be freed now
                self.releases[k[0]] += 1
            if any(loaded.on_gpu for _, loaded in closing):
                free_cuda_cache()
        if errors:
            raise errors[0]
        return len(closing)


def free_cuda_cache() -> None:
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def gpu_memory() -> tuple[int, int] | None:
    """(free, total) bytes of the current CUDA device as the driver reports them; None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.mem_get_info()


def free_gpu_problem(memory: tuple[int, int] | None, min_free_fraction: float) -> str | None:
    """Why the GPU is not free enough to start training on it, or None when it is (or there is none)."""
    if memory is None:
        return None
    free, total = memory
    if free >= min_free_fraction * total:
        return None
    gib = 1 << 30
    return (
        f"the GPU has {free / gib:.1f} GiB free of {total / gib:.1f} GiB ({free / total:.0%}), under "
        f"gpu.training_min_free_fraction = {min_free_fraction:.0%}: another process holds it (a vLLM server, "
        "another run); stop it or lower the setting"
    )


ENGINES = EngineRegistry()
