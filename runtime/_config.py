"""Where the database URL comes from: argument, environment, project file, default."""

from __future__ import annotations

import difflib
import os
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any

from trioforge._core.errors import ConfigurationError

__all__ = ["DEFAULT_DATABASE", "resolve_database", "resolve_listen_url"]

#: No configuration at all: a SQLite file in a local data directory.
DEFAULT_DATABASE = "sqlite:///.trioforge/jobs.db"
ENV_DATABASE = "TRIOFORGE_DATABASE_URL"
ENV_PASSWORD_ENV = "TRIOFORGE_PASSWORD_ENV"
ENV_LISTEN_URL = "TRIOFORGE_LISTEN_URL"
#: The keys the settings table may hold; any other is a typo to report, not to ignore.
KNOWN_KEYS = ("database", "password_env", "listen_url")


def _file_settings(cwd: Path) -> dict[str, Any]:
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file():
        table = _load(pyproject).get("tool", {}).get("trioforge")
        if isinstance(table, dict):
            return _checked(table, f"[tool.trioforge] in {pyproject}")
    own = cwd / "trioforge.toml"
    if own.is_file():
        return _checked(_load(own), str(own))
    return {}


def _checked(settings: dict[str, Any], where: str) -> dict[str, Any]:
    """``settings`` if every key is known; a misspelt key would otherwise be ignored and
    the default database used without a word."""
    for key in settings:
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
            hint = (
                f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(KNOWN_KEYS)}"
            )
            raise ConfigurationError(f"unknown key {key!r} in {where}; {hint}")
    return settings


def _load(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from None


def resolve_database(database: str | None = None, *, cwd: Path | None = None) -> str:
    """The database URL to use: ``database`` if given, else ``$TRIOFORGE_DATABASE_URL``,
    else ``database`` in ``[tool.trioforge]`` of ./pyproject.toml or in ./trioforge.toml,
    else :data:`DEFAULT_DATABASE`.

    A password is never written in those files: ``password_env = "NAME"`` in the settings
    (or ``$TRIOFORGE_PASSWORD_ENV``) names the environment variable holding it, and it is
    put into a URL that has none.
    """
    if database is not None and not database:
        raise ConfigurationError(
            "the database URL is empty; give one (sqlite:///path.db, postgresql://...) or "
            "leave it out to use the configured one"
        )
    settings = _file_settings(cwd or Path.cwd())
    url = database or os.environ.get(ENV_DATABASE) or settings.get("database")
    if url is None:
        return DEFAULT_DATABASE
    if not isinstance(url, str) or not url:
        raise ConfigurationError("`database` in the trioforge settings must be a URL string")
    return _password_in(url, settings)


def resolve_listen_url(listen_url: str | None = None, *, cwd: Path | None = None) -> str | None:
    """Where PostgreSQL's LISTEN connects when the database URL goes through a transaction
    pooler: ``listen_url`` if given, else ``$TRIOFORGE_LISTEN_URL``, else ``listen_url`` in
    the settings file, else None (LISTEN uses the database URL). ``password_env`` applies
    as it does to the database URL."""
    if listen_url is not None and not listen_url:
        raise ConfigurationError(
            "the listen URL is empty; give a postgresql:// URL or leave it out"
        )
    settings = _file_settings(cwd or Path.cwd())
    url = listen_url or os.environ.get(ENV_LISTEN_URL) or settings.get("listen_url")
    if url is None:
        return None
    if not isinstance(url, str) or not url:
        raise ConfigurationError("`listen_url` in the trioforge settings must be a URL string")
    return _password_in(url, settings)


def _password_in(url: str, settings: dict[str, Any]) -> str:
    """``url`` with the password that ``password_env`` names, if it has none."""
    password_env = os.environ.get(ENV_PASSWORD_ENV) or settings.get("password_env")
    if password_env is None:
        return url
    if not isinstance(password_env, str) or not password_env:
        raise ConfigurationError("`password_env` must name an environment variable")
    return _with_password(url, password_env)


def _with_password(url: str, password_env: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is not None or not parts.scheme.startswith("postgres"):
        return url
    password = os.environ.get(password_env)
    if password is None:
        raise ConfigurationError(
            f"the database password comes from ${password_env} (password_env), which is "
            "not set; export it, or remove password_env from the settings"
        )
    user = urllib.parse.quote(parts.username or "", safe="")
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:{urllib.parse.quote(password, safe='')}@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
