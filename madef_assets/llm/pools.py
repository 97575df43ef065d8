"""The Dagster pool of a step: the contended thing its model runs on, named from the role's configuration.

A local model (transformers, vllm) holds memory on its device, so local steps share that device's pool
(`device/cpu`, `device/cuda0`): with one slot per pool (the instance's `concurrency.pools.default_limit`) a
device never holds two steps' engines at once. A served model (`openai`) is limited by its endpoint, so
served steps share the pool of their endpoint (`endpoint/<host>_<port>_<path>`): steps on two endpoints
run at once. A step without a model takes no pool. Nothing here imports torch or Dagster: callers pass
what `device: auto` means on this machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def device_name(device: str) -> str:
    """`cpu`, `cuda` and `cuda:N` as pool-name parts: `cpu`, `cuda0`, `cudaN`."""
    kind, _, index = device.partition(":")
    if kind == "cuda":
        return f"cuda{index or 0}"
    if kind == "cpu" and not index:
        return "cpu"
    raise ValueError(f"device {device!r}: cpu, cuda or cuda:<index>")


def endpoint_name(base_url: str) -> str:
    """`http://127.0.0.1:8000/v1` -> `127.0.0.1_8000_v1` (host, port, path; a default port is spelt out)."""
    parts = urlsplit(base_url)
    if not parts.hostname or parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"base_url {base_url!r}: an http(s) URL with a host")
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    path = "_".join(p for p in parts.path.split("/") if p)
    return "_".join(p for p in (parts.hostname, str(port), path) if p)


def model_pool(backend: str, options: Mapping[str, Any], auto_device: str) -> str:
    """The pool of one model: its device's (local backends) or its endpoint's (`openai`; replicas: all of
    their endpoints, joined by `+`). `auto_device` is what `device: auto` (the default) means here."""
    if backend == "openai":
        urls = options["base_url"]
        urls = [urls] if isinstance(urls, str) else urls
        return "endpoint/" + "+".join(sorted(endpoint_name(url) for url in urls))
    if backend == "vllm":  # vLLM runs on the first visible GPU (tensor parallelism: from it on)
        return "device/cuda0"
    if backend == "transformers":
        device = options.get("device", "auto")
        return "device/" + device_name(auto_device if device == "auto" else device)
    raise ValueError(f"unknown backend {backend!r}: transformers, openai or vllm")


def role_pools(role: Any, auto_device: str) -> list[str]:
    """The pools of a role's models (a panel: every member's)."""
    return [model_pool(m.backend, m.options, auto_device) for m in role.members]


def step_pool(pools: Iterable[str | None]) -> str | None:
    """A Dagster op has one pool: of the pools its models use, the scarcest, a local device before an
    endpoint (a device holds one engine at a time; an endpoint serves many requests), then by name so the
    choice is stable. None when the step uses no model."""
    named = sorted({p for p in pools if p}, key=lambda p: (not p.startswith("device/"), p))
    return named[0] if named else None


# The k8s executor reads this op tag into the step's pod; other executors ignore it.
GPU_REQUEST_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": 1}}}}}


def gpu_request_tags(pools: Iterable[str | None]) -> dict[str, Any]:
    """Op tags asking Kubernetes for a GPU for a step that may hold a GPU device's pool; {} otherwise, so
    only training and local-model steps on a GPU get a GPU pod."""
    return GPU_REQUEST_TAGS if any(p and p.startswith("device/cuda") for p in pools) else {}


def auto_device() -> str:
    """What a transformers backend's `device: auto` picks on this machine (as TransformersBackend does)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
