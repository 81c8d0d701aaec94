"""Settings of the embedding function: validation, persisted config, API key lookup.

The persisted config (what chromadb stores in a collection's schema) never holds a
secret: it names the environment variable the key is read from when the function is
rebuilt by name, as chromadb's own functions do.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import os
import threading
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema

from ._chroma_compat import cloud_api_key_from_clients
from ._constants import (
    BASE_URL_ENV_VAR,
    DEFAULT_API_KEY_ENV_VAR,
    DEFAULT_BASE_URL,
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    EMBEDDING_FUNCTION_NAME,
)
from ._exceptions import ConfigurationError, DenseOnlyModelError, MissingAPIKeyError
from ._models import DEFAULT_MODEL, model_info

__all__ = [
    "IMMUTABLE_KEYS",
    "KeyPlan",
    "Secret",
    "Settings",
    "check_header_value",
    "config_schema",
    "display_url",
    "is_loopback_url",
    "plan_api_key",
    "resolve_api_key",
    "shipped_schema",
    "split_timeout",
    "trust_base_url",
    "validate_config",
]

_STR = {"type": "string", "minLength": 1}
_OPTIONAL_STR = {"type": ["string", "null"]}


def _setting(
    default: Any,
    schema: dict[str, Any],
    *,
    persist: str = "always",
    immutable: bool = False,
    doc: str = "",
) -> Any:
    """Declare one setting: its default, its JSON schema, how it is persisted.

    Args:
        default: The constructor's default.
        schema: The JSON schema of its persisted value; also what `__post_init__` checks
            for integers (``minimum``), booleans and strings (``minLength``).
        persist: ``"always"``, or ``"if_set"`` (omitted from the config when None, so an
            unset value is looked up again, e.g. a URL from the environment).
        immutable: Changing it would put new vectors in another space than stored ones.
        doc: One line, for the JSON schema's ``description``.
    """
    meta = {"schema": schema, "persist": persist, "immutable": immutable, "doc": doc}
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything that decides what is sent, validated. Holds no secret.

    The one declaration of every setting: the constructor's checks, `to_config` /
    `from_config` and the packaged JSON schema (`config_schema`, checked against the
    shipped file by tests/unit/test_config.py) are all derived from these fields.
    """

    model: str = _setting(DEFAULT_MODEL, _STR, immutable=True, doc="model for documents")
    query_model: str | None = _setting(
        None, _STR, immutable=True, doc="model for queries (persisted resolved)"
    )
    api_key_env_var: str = _setting(
        DEFAULT_API_KEY_ENV_VAR, _STR, doc="environment variable holding the key"
    )
    base_url: str | None = _setting(
        None,
        {"type": ["string", "null"], "pattern": "^https?://"},
        persist="if_set",
        doc="the service's base URL",
    )
    task: str | None = _setting(None, _OPTIONAL_STR, persist="if_set", immutable=True)
    instructions: str | None = _setting(None, _OPTIONAL_STR, persist="if_set", immutable=True)
    query_instructions: str | None = _setting(None, _OPTIONAL_STR, persist="if_set", immutable=True)
    fetch_labels: bool = _setting(False, {"type": "boolean"})
    batch_size: int = _setting(DEFAULT_BATCH_SIZE, {"type": "integer", "minimum": 1})
    max_concurrency: int = _setting(DEFAULT_MAX_CONCURRENCY, {"type": "integer", "minimum": 1})
    max_retries: int = _setting(DEFAULT_MAX_RETRIES, {"type": "integer", "minimum": 0})
    timeout: float = _setting(DEFAULT_TIMEOUT, {"type": "number", "exclusiveMinimum": 0})

    def __post_init__(self) -> None:
        _check_model("model", self.model)
        if self.query_model is not None:
            _check_model("query_model", self.query_model)
        _check_str("api_key_env_var", self.api_key_env_var, empty_ok=False)
        for name in ("task", "instructions", "query_instructions"):
            value = getattr(self, name)
            if value is not None:
                _check_str(name, value, empty_ok=True)
        if self.task is not None and (
            self.instructions is not None or self.query_instructions is not None
        ):
            raise ConfigurationError(
                "pass either task or instructions, not both: the service takes one or the other"
            )
        for f in fields(self):
            schema = f.metadata["schema"]
            value = getattr(self, f.name)
            if schema["type"] == "boolean" and type(value) is not bool:
                raise ConfigurationError(f"{f.name} must be True or False, got {value!r}")
            if schema["type"] == "integer":
                _check_int(f.name, value, minimum=schema["minimum"])
        if (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, (int, float))
            or not self.timeout > 0
            or not math.isfinite(self.timeout)
        ):
            raise ConfigurationError(
                f"timeout must be a positive number of seconds, got {self.timeout!r}"
            )
        if self.base_url is not None:
            _check_str("base_url", self.base_url, empty_ok=False)
            if not self.base_url.startswith(("http://", "https://")):
                raise ConfigurationError(
                    f"base_url must start with http:// or https://, got {display_url(self.base_url)!r}"
                )
            parts = urlsplit(self.base_url)
            if parts.username is not None or parts.password is not None:
                # The URL is persisted in collection configs and logged by httpx.
                raise ConfigurationError(
                    "base_url must not contain credentials (user:password@): they would be "
                    "stored in collection configs and logged; pass the key as api_key"
                )

    @property
    def resolved_query_model(self) -> str:
        """The model queries are embedded with: explicit, else the catalog's twin, else `model`."""
        if self.query_model is not None:
            return self.query_model
        info = model_info(self.model)
        return info.query_model if info and info.query_model else self.model

    def to_config(self) -> dict[str, Any]:
        """The persisted config: JSON-serialisable, secret-free, minimal."""
        config: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "query_model":
                value = self.resolved_query_model
            elif f.name == "timeout":
                value = float(value)
            if value is None and f.metadata["persist"] == "if_set":
                continue
            config[f.name] = value
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Settings:
        """Settings from a persisted config (validated against the packaged JSON schema)."""
        validate_config(config)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in known})

    def with_changes(self, **changes: Any) -> Settings:
        """A copy with some settings changed (validated again)."""
        return replace(self, **changes)


def _check_model(name: str, value: object) -> None:
    _check_str(name, value, empty_ok=False)
    check_header_value(name, str(value), show=True)
    info = model_info(str(value))
    if info is not None and not info.sparse:
        raise DenseOnlyModelError(
            f"{value!r} is a dense-only model: /embed_sparse does not serve it. "
            "Use one of the sparse models, such as 'prithivida/Splade_PP_en_v1' or 'BAAI/bge-m3'",
            model=str(value),
        )


def check_header_value(name: str, value: str, *, show: bool) -> None:
    """Refuse a value an HTTP header cannot carry, before any request.

    Sent as a header (the model, the key), a value with a non-ASCII or control character
    or surrounding blanks would only fail inside httpx, in frames that hold the key.

    Args:
        show: Quote the value in the message (never for a key).

    Raises:
        ConfigurationError: naming the setting, and the value only when `show`.
    """
    if value.isascii() and value.isprintable() and value == value.strip():
        return
    quoted = f" {value!r}" if show else ""
    raise ConfigurationError(
        f"{name}{quoted} cannot be sent as an HTTP header: only printable ASCII characters, "
        "without leading or trailing blanks"
    )


def _check_str(name: str, value: object, *, empty_ok: bool) -> None:
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, got {type(value).__name__}")
    if not empty_ok and not value.strip():
        raise ConfigurationError(f"{name} must not be empty")


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if type(value) is not int or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")


#: Keys whose change would put new vectors in a different space from stored ones.
IMMUTABLE_KEYS = tuple(f.name for f in fields(Settings) if f.metadata["immutable"])
#: Keys a config must hold.
_REQUIRED_KEYS = ("model", "api_key_env_var")


@functools.cache
def config_schema() -> dict[str, Any]:
    """The JSON schema of a persisted config, derived from `Settings`.

    The same schema ships as ``schemas/chroma_sparse_ef.json`` (for tools that read
    files); a test keeps the two equal.
    """
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": EMBEDDING_FUNCTION_NAME,
        "description": (
            "Persisted configuration of chroma_sparse_ef.ChromaSparseEmbeddingFunction. "
            "Never holds a secret: the API key is looked up through api_key_env_var when "
            "the function is rebuilt."
        ),
        "type": "object",
        "properties": {f.name: dict(f.metadata["schema"]) for f in fields(Settings)},
        "required": list(_REQUIRED_KEYS),
        "additionalProperties": False,
    }


def shipped_schema() -> dict[str, Any]:
    """The JSON schema file shipped in the package."""
    text = (
        resources.files("chroma_sparse_ef")
        .joinpath("schemas", f"{EMBEDDING_FUNCTION_NAME}.json")
        .read_text(encoding="utf-8")
    )
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_config(config: dict[str, Any]) -> None:
    """Validate a persisted config against the JSON schema shipped in the package.

    Raises:
        ConfigurationError: the config does not match the schema, or holds a secret.
    """
    if not isinstance(config, dict):
        raise ConfigurationError(f"config must be a dict, got {type(config).__name__}")
    if "api_key" in config:
        raise ConfigurationError(
            "config must never contain 'api_key': store the name of an environment "
            "variable in 'api_key_env_var' instead"
        )
    try:
        jsonschema.validate(config, config_schema())
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "config"
        raise ConfigurationError(
            f"invalid {EMBEDDING_FUNCTION_NAME} config at {where}: {exc.message}"
        ) from exc


def resolve_api_key(api_key: str | None, env_var: str) -> str | None:
    """Find the key like chromadb does: explicit, then the env var, then a CloudClient's."""
    if api_key:
        return api_key
    from_env = os.environ.get(env_var)
    if from_env:
        return from_env
    try:
        return cloud_api_key_from_clients()
    except Exception:  # a lookup of convenience: any failure means "no key there"
        return None


def require_api_key(api_key: str | None, env_var: str, base_url: str) -> str | None:
    """The key to send, or None for a keyless local server.

    Raises:
        MissingAPIKeyError: no key anywhere and the URL is not a loopback address.
    """
    key = resolve_api_key(api_key, env_var)
    if key is None and not is_loopback_url(base_url):
        raise MissingAPIKeyError(
            f"no API key for {display_url(base_url)}: pass api_key=..., or set the "
            f"{env_var} environment variable (or create a chromadb CloudClient first)"
        )
    return key


def is_loopback_url(url: str) -> bool:
    """True when `url` points at this machine (127.0.0.0/8, ::1 or localhost)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def display_url(url: str) -> str:
    """`url` without any user:password part, safe to print."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def split_timeout(timeout: object) -> tuple[float, httpx.Timeout]:
    """The attempt's deadline in seconds, and httpx's per-phase timeouts.

    A number `t` bounds the whole attempt by `t`, with a connect timeout of
    ``min(DEFAULT_CONNECT_TIMEOUT, t)``. An `httpx.Timeout` keeps its phases, and the
    attempt as a whole is bounded by the largest of them; every phase must be set.

    Raises:
        ConfigurationError: not a positive finite number, or a phase is unset.
    """
    if isinstance(timeout, httpx.Timeout):
        phases = {
            "connect": timeout.connect,
            "read": timeout.read,
            "write": timeout.write,
            "pool": timeout.pool,
        }
        for name, value in phases.items():
            if value is None or not (value > 0 and math.isfinite(value)):
                raise ConfigurationError(
                    f"timeout.{name} must be a positive number of seconds, got {value!r}: "
                    "an unset phase would let a request hang"
                )
        return max(v for v in phases.values() if v is not None), timeout
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not (timeout > 0 and math.isfinite(timeout))
    ):
        raise ConfigurationError(
            f"timeout must be a positive number of seconds or an httpx.Timeout, got {timeout!r}"
        )
    seconds = float(timeout)
    return seconds, httpx.Timeout(seconds, connect=min(DEFAULT_CONNECT_TIMEOUT, seconds))


# Base URLs a caller passed to the constructor in this process: a key the caller did not
# pass may go there too when a collection rebuilds the function from its config.
_TRUSTED_URLS: set[tuple[str, str, int, str]] = set()
_TRUSTED_LOCK = threading.Lock()


def _url_key(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")


def trust_base_url(url: str) -> None:
    """Remember that a caller of this process chose `url` (see `plan_api_key`)."""
    with _TRUSTED_LOCK:
        _TRUSTED_URLS.add(_url_key(url))


@dataclass(frozen=True, slots=True)
class Secret:
    """A value kept out of reprs: frames that hold it print ``Secret()`` in tracebacks."""

    value: Any = field(repr=False)


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """What to send as the token, decided at construction.

    Attributes:
        key: The key to send; None means the loopback placeholder (or `refusal`).
        refusal: Set when a key exists but may not go to this URL: the message of the
            `MissingAPIKeyError` the first request raises.
    """

    key: str | None = field(repr=False)
    refusal: str | None = None


def plan_api_key(
    api_key: str | None,
    env_var: str,
    base_url: str,
    *,
    from_config: bool,
    env_base_url: str | None,
) -> KeyPlan:
    """Decide which key goes to `base_url` (the rule of the README's "Security" section).

    A key passed as `api_key` goes wherever the caller sends it. A key found elsewhere
    (the env var, a CloudClient) goes only to the hosted service, to `CHROMA_EMBED_URL`,
    or to a `base_url` a caller passed to the constructor in this process. A URL that came
    from a stored config (`from_config`) and is none of those gets no key: a loopback URL
    gets the placeholder token, any other URL a `refusal` raised at the first request, so
    the collection still opens.

    Raises:
        MissingAPIKeyError: no key anywhere and the URL is not a loopback address.
    """
    if api_key:
        return KeyPlan(api_key)
    allowed = {_url_key(DEFAULT_BASE_URL)}
    if env_base_url:
        allowed.add(_url_key(env_base_url))
    target = _url_key(base_url)
    with _TRUSTED_LOCK:
        trusted = not from_config or target in allowed or target in _TRUSTED_URLS
    if not trusted:
        if is_loopback_url(base_url):
            return KeyPlan(None)
        where = display_url(base_url)
        return KeyPlan(
            None,
            refusal=(
                f"not sending an API key to {where}: that URL comes from a stored "
                "collection config, not from this program, and a key found in the "
                f"environment goes only to {DEFAULT_BASE_URL}, to ${BASE_URL_ENV_VAR}, or to "
                "a base_url passed to the constructor. To allow it, pass api_key=... "
                f"(e.g. build the function yourself), or set {BASE_URL_ENV_VAR}={where}"
            ),
        )
    return KeyPlan(require_api_key(None, env_var, base_url))
