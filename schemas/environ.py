"""Strict reading of ``TRACKER_*`` variables: the only place that interprets the environment.

Each service builds one frozen settings object from a mapping (``os.environ`` in production,
a plain dict in tests) through an :class:`Environ`; every cast error names the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable and what it expects."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Environ:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str, default: str | None = None) -> str:
        value = self._environ.get(name)
        if value is None or value == "":
            if default is None:
                raise ConfigError(f"{name} is required but not set")
            return default
        return value

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise ConfigError(f"{name} must be {bound}, got {value}")
        return value

    def port(self, name: str, default: int) -> int:
        return self.integer(name, default, minimum=1, maximum=65535)

    def flag(self, name: str, default: bool) -> bool:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(f"{name} must be true or false, got {raw!r}")

    def secret(self, name: str, *, min_length: int) -> str:
        """A required secret; the error says what is wrong without echoing the value."""
        value = self._environ.get(name, "")
        if not value:
            raise ConfigError(
                f"{name} is required: a random secret of at least {min_length} characters "
                "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if len(value) < min_length:
            raise ConfigError(f"{name} is too short: at least {min_length} characters are needed")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def bootstrap(self, name: str, default: str) -> tuple[str, ...]:
        """A comma-separated list of ``host:port`` Kafka bootstrap servers."""
        raw = self.text(name, default)
        servers = tuple(part.strip() for part in raw.split(",") if part.strip())
        if not servers:
            raise ConfigError(f"{name} must list at least one host:port, got {raw!r}")
        for server in servers:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"{name} entries must be host:port, got {server!r}")
        return servers

    def http_url(self, name: str, default: str) -> str:
        value = self.text(name, default)
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{name} must be an http(s)://host:port URL, got {mask_url(value)!r}")
        try:
            parts.port  # noqa: B018 - property raises on a malformed port
        except ValueError:
            raise ConfigError(f"{name} has an invalid port: {mask_url(value)!r}") from None
        return value


def mask_url(url: str) -> str:
    """The URL with any password replaced, for logs and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
