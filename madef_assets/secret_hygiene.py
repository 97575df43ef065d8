"""Keeping credentials out of what madef stores, shows and starts.

- `endpoint_problem`: an endpoint URL is checked before any connection: credentials in it (`user:pass@`, a
  `?key=` query) are refused, since the URL is stored in every ledger row, in asset metadata and in the resource
  config the UI shows; a key is refused over `http://` to a host that is not loopback by its literal address.
- `mask_secrets`: key-like strings in an error text (a provider's error body may echo the key) are masked.
- `child_env`: the environment of every child process (training, evaluators, benchmarks' helpers) is this
  process's less every credential-looking variable.

Loopback means the host as written: `localhost`, an address in 127.0.0.0/8, `::1` (or its IPv4-mapped form).
A DNS name is never loopback here, even one that resolves to 127.0.0.1: resolving it would be network I/O before
the check, and the answer may differ when the client connects.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MASK = "***"
LOOPBACK_NAMES = ("localhost",)
DEFAULT_KEY_ENV = "OPENAI_API_KEY"

# A variable or query parameter whose name has one of these words (split at _ - .) or contains one of these
# parts holds a credential. `TOKEN` is a word, not a part: TOKENIZERS_PARALLELISM is not a secret.
_SECRET_WORDS = {"KEY", "KEYS", "TOKEN", "TOKENS", "PASS", "PWD", "AUTH", "COOKIE", "SIG", "SIGNATURE"}
_SECRET_PARTS = ("PASSWORD", "PASSWD", "SECRET", "APIKEY", "CREDENTIAL", "PRIVATE_KEY", "ACCESS_KEY")
_SECRET_PREFIXES = ("AWS_",)  # every AWS_* variable: a profile, a session or a key, none needed by a child

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"'<>]+@")
# Keys of known providers by their prefix: OpenAI/Anthropic/DashScope sk-, Groq, Hugging Face, GitHub,
# Slack, AWS access key ids, Google API keys, JWTs. `*` inside: providers echo keys half-masked.
_PREFIXED_KEY = re.compile(
    r"\b(?:(?:sk|pk|rk)-[A-Za-z0-9_*-]{8,}|gsk_[A-Za-z0-9_*]{8,}|hf_[A-Za-z0-9*]{8,}|gh[pousr]_[A-Za-z0-9_*]{8,}"
    r"|github_pat_[A-Za-z0-9_*]{8,}|xox[abprs]-[A-Za-z0-9*-]{8,}|AKIA[0-9A-Z]{16}\b|AIza[0-9A-Za-z_*-]{20,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)"
)
_AUTH_SCHEME = re.compile(r"(?i)\b(Bearer|Basic)\s+([A-Za-z0-9._~+/=*-]{8,})")
_NAMED_VALUE = re.compile(
    r"(?i)(\b[\w-]*?(?:api[_-]?key|access[_-]?key|secret|password|passwd|token|authorization|credentials?)"
    r"\b[\"']?\s*[:=]\s*[\"']?)((?:Bearer\s+|Basic\s+)?[^\s\"'&,;<>]+)"
)
_QUERY_VALUE = re.compile(r"(?i)([?&][\w-]*?(?:key|token|secret|password|sig|signature)=)[^&\s#\"'<>]+")
_HALF_MASKED = re.compile(r"[A-Za-z0-9_-]*[A-Za-z0-9]\*{3,}[A-Za-z0-9_*-]*")
# A run of token characters (no `/`: paths stay readable) holding 20+ letters and digits in a row, mixed.
_LONG_RUN = re.compile(r"[A-Za-z0-9+=_-]{20,}")
_ALNUM_PIECE = re.compile(r"[A-Za-z0-9]{20,}")


def is_secret_name(name: str) -> bool:
    """Whether an environment variable or URL query parameter of this name holds a credential."""
    upper = name.upper()
    words = [w for w in re.split(r"[_.\-]", upper) if w]
    if upper.startswith(_SECRET_PREFIXES) or any(part in upper for part in _SECRET_PARTS):
        return True
    # PWD alone is the working directory; MYSQL_PWD is a password.
    return any(w in _SECRET_WORDS and not (w == "PWD" and len(words) == 1) for w in words)


def _random_looking(token: str) -> bool:
    classes = [
        any(c.islower() for c in token),
        any(c.isupper() for c in token[1:]),
        any(c.isdigit() for c in token),
        any(c in "_-+/=*." for c in token),
    ]
    return sum(classes) >= 2


def _mask_long_run(match: re.Match) -> str:
    run = match.group(0)
    for piece in _ALNUM_PIECE.findall(run):
        digits = sum(c.isdigit() for c in piece)
        if digits >= 2 and len(piece) - digits >= 2:
            return MASK
    return run


def mask_secrets(text: str | None, known: Iterable[str] = ()) -> str | None:
    """`text` with key-like strings replaced by ***: each `known` value (the configured keys) wherever it
    appears, userinfo in URLs, provider-prefixed keys (sk-, hf_, AKIA…), `Bearer`/`Basic` credentials,
    `api_key=`/`"token": "…"` values, half-masked echoes (`sk-ab****yz`), and long mixed letter-digit tokens
    (hex digests, base64 keys). Ordinary words, numbers, paths and model names are left as they are."""
    if not text:
        return text
    for value in sorted({k for k in known if k and len(k) >= 4}, key=len, reverse=True):
        text = text.replace(value, MASK)
    text = _URL_USERINFO.sub(rf"\1{MASK}@", text)
    text = _QUERY_VALUE.sub(rf"\1{MASK}", text)
    text = _NAMED_VALUE.sub(lambda m: m.group(1) + (m.group(2) if m.group(2) == MASK else MASK), text)
    text = _AUTH_SCHEME.sub(
        lambda m: f"{m.group(1)} {MASK}" if _random_looking(m.group(2)) else m.group(0),
        text,
    )
    text = _PREFIXED_KEY.sub(MASK, text)
    text = _HALF_MASKED.sub(lambda m: m.group(0) if m.group(0) == MASK else MASK, text)
    return _LONG_RUN.sub(_mask_long_run, text)


def redact_url(url: str) -> str:
    """The URL without userinfo and with secret-looking query values masked (for messages)."""
    return mask_secrets(_URL_USERINFO.sub(rf"\1{MASK}@", url)) or ""


def is_loopback_host(host: str) -> bool:
    """`localhost`, an IPv4 address in 127.0.0.0/8, or ::1 (also IPv4-mapped); no name is resolved."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def endpoint_problem(url: Any, sends_key: bool, allow_insecure_http: bool = False) -> str | None:
    """Why madef will not send requests to `url` (None when it may): not an http(s) URL with a host,
    credentials in the URL, or a key in clear over http:// to a host that is not loopback (unless the
    endpoint's `allow_insecure_http: true` says so). Never echoes the credentials."""
    if not isinstance(url, str):
        return f"base_url must be a string, got {type(url).__name__}"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return f"{redact_url(url)!r} is not a valid URL"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        return f"{redact_url(url)!r} is not an http:// or https:// URL with a host"
    if "@" in parts.netloc:
        return (
            f"{redact_url(url)!r} has credentials in the URL (user:password@): they would be stored in every "
            "ledger row, in asset metadata and in the resource config; put the key in an environment variable "
            "and name it with api_key_env (sent as the Authorization header)"
        )
    in_query = sorted({name for name, _ in parse_qsl(parts.query, keep_blank_values=True) if is_secret_name(name)})
    if in_query:
        return (
            f"{redact_url(url)!r} has a credential in its query ({', '.join(in_query)}): put the key in an "
            "environment variable and name it with api_key_env"
        )
    if scheme == "http" and sends_key and not allow_insecure_http and not is_loopback_host(host):
        return (
            f"{redact_url(url)!r}: the API key would cross the network in clear over http:// to {host}; use "
            "https://, a loopback address (127.0.0.1, ::1, localhost), api_key_env: null for a server without "
            "keys, or allow_insecure_http: true for this endpoint"
        )
    return None


def openai_endpoint_problems(options: Mapping[str, Any]) -> list[str]:
    """endpoint_problem for each base_url of an openai backend's options (one URL or a list of replicas)."""
    urls = options.get("base_url")
    urls = list(urls) if isinstance(urls, (list, tuple)) else [urls]
    sends_key = options.get("api_key_env", DEFAULT_KEY_ENV) is not None
    insecure = bool(options.get("allow_insecure_http", False))
    return [p for p in (endpoint_problem(url, sends_key, insecure) for url in urls) if p]


def looks_like_secret_value(value: str) -> bool:
    """A URL with userinfo or a provider-prefixed key (generic long tokens are not judged by value here:
    paths, digests and the Pipes bootstrap payload would match)."""
    return bool(_URL_USERINFO.search(value) or _PREFIXED_KEY.search(value))


def child_env(
    extra: Mapping[str, str] | None = None,
    secret_names: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for a child process: `environ` (default os.environ) less every variable whose name
    looks like a credential (`is_secret_name`: *_API_KEY, *_TOKEN, *SECRET*, *PASSWORD*, AWS_*, …), is one of
    `secret_names` (the profile's api_key_env names, whatever they are called), holds a credential-looking
    value, or holds the same value as a dropped one; then `extra`, whose names must not look like credentials."""
    source = os.environ if environ is None else environ
    named = set(secret_names)
    dropped = {n for n, v in source.items() if n in named or is_secret_name(n) or looks_like_secret_value(v)}
    dropped_values = {source[n] for n in dropped if len(source[n]) >= 8}
    env = {n: v for n, v in source.items() if n not in dropped and v not in dropped_values}
    for name, value in (extra or {}).items():
        if name in named or is_secret_name(name):
            raise ValueError(f"{name} looks like a credential: madef passes none to a child process")
        env[name] = value
    return env


def configured_key_names(options: Iterable[tuple[str, Mapping[str, Any]]]) -> set[str]:
    """The api_key_env names among (backend, options) pairs of the profile's roles and candidates."""
    names = set()
    for backend, spec in options:
        if backend == "openai":
            name = spec.get("api_key_env", DEFAULT_KEY_ENV)
            if name:
                names.add(str(name))
    return names
