"""Two transports for the OpenAI wire protocol, with one error vocabulary for the openai backend's retries:
`aiohttp` (default: JSON over a pooled aiohttp session; about 2.5x the requests per second of the SDK
on 2 cores, see BENCHMARKS.md) and `sdk` (the official `openai` client, for providers whose quirks it
handles). Both return the response body as a dict."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import openai
from openai import AsyncOpenAI

from madef_assets.secret_hygiene import mask_secrets

TRANSPORTS = ("aiohttp", "sdk")


class HTTPStatusError(Exception):
    """A 4xx/5xx answer: status, the body's error message and code (e.g. `data_inspection_failed`)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None, code: str | None = None):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message, self.headers, self.code = status, message, headers, code


class TransportTimeout(Exception):
    pass


class TransportConnectionError(Exception):
    pass


class MalformedResponse(Exception):
    """The server answered 2xx but the body is not the expected OpenAI shape."""


def error_details(body: Any, api_key: str = "") -> tuple[str, str | None]:
    """(message, code) of an error body: OpenAI's {"error": {"message", "code", "type"}}, DashScope's
    compatible mode (the same, code `data_inspection_failed`) or its native {"code", "message"}. The message
    is masked (`api_key` and key-like strings: some providers echo the key) before it is cut to 300 characters,
    so a cut never leaves part of a key unrecognised."""
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            return _short(text, api_key), None
    if not isinstance(body, dict):
        return _short(str(body), api_key), None
    error = body.get("error", body)
    if not isinstance(error, dict):
        return _short(str(error), api_key), None
    code = error.get("code") or error.get("type")
    return _short(str(error.get("message") or body), api_key), None if code is None else str(code)


def _short(text: str, api_key: str) -> str:
    return (mask_secrets(text, [api_key]) or "")[:300]


class AiohttpClient:
    """POSTs JSON to `<base_url><path>` over one pooled session (created inside the running event loop)."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float, connections: int):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self.headers, timeout=self.timeout, connector=aiohttp.TCPConnector(limit=self.connections)
            )
        try:
            async with self._session.post(self.base_url + path, data=json.dumps(payload)) as response:
                body = await response.read()
                if response.status >= 400:
                    message, code = error_details(body, self.api_key)
                    raise HTTPStatusError(response.status, message, response.headers, code)
        except asyncio.TimeoutError as exc:
            raise TransportTimeout(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise TransportConnectionError(f"{type(exc).__name__}: {exc}") from exc
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise MalformedResponse(f"body is not JSON: {body[:200]!r}") from exc
        if not isinstance(data, dict):
            raise MalformedResponse(f"body is not a JSON object: {body[:200]!r}")
        return data

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class SdkClient:
    """The official async client, its retries off (the backend retries), its errors mapped."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float, connections: int):
        self.api_key = api_key
        self._client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s)

    async def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        endpoint = self._client.chat.completions if path == "/chat/completions" else self._client.completions
        try:
            response = await endpoint.create(**payload)
        except openai.APIStatusError as exc:
            message, code = error_details(exc.body if exc.body is not None else exc.response.content, self.api_key)
            raise HTTPStatusError(
                exc.status_code, message or _short(str(exc.message), self.api_key), exc.response.headers, code
            ) from exc
        except openai.APITimeoutError as exc:
            raise TransportTimeout(str(exc)) from exc
        except openai.APIConnectionError as exc:
            raise TransportConnectionError(str(exc)) from exc
        except openai.APIResponseValidationError as exc:
            raise MalformedResponse(str(exc)[:300]) from exc
        return response.model_dump()

    async def close(self) -> None:
        await self._client.close()


def make_client(
    transport: str, base_url: str, api_key: str, timeout_s: float, connections: int
) -> AiohttpClient | SdkClient:
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
    cls = AiohttpClient if transport == "aiohttp" else SdkClient
    return cls(base_url, api_key, timeout_s, connections)
