"""Where the database URL comes from."""

from __future__ import annotations

from pathlib import Path

import pytest

from trioforge import ConfigurationError
from trioforge._config import DEFAULT_DATABASE, resolve_database, resolve_listen_url
from trioforge.storage import backend_for_url


def test_argument_then_environment_then_files_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRIOFORGE_DATABASE_URL", raising=False)
    assert resolve_database(None, cwd=tmp_path) == DEFAULT_DATABASE
    (tmp_path / "trioforge.toml").write_text('database = "sqlite:///own.db"\n')
    assert resolve_database(None, cwd=tmp_path) == "sqlite:///own.db"
    (tmp_path / "pyproject.toml").write_text('[tool.trioforge]\ndatabase = "sqlite:///py.db"\n')
    assert resolve_database(None, cwd=tmp_path) == "sqlite:///py.db"
    monkeypatch.setenv("TRIOFORGE_DATABASE_URL", "sqlite:///env.db")
    assert resolve_database(None, cwd=tmp_path) == "sqlite:///env.db"
    assert resolve_database("memory://", cwd=tmp_path) == "memory://"


def test_pyproject_without_a_trioforge_table_falls_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRIOFORGE_DATABASE_URL", raising=False)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "app"\n')
    (tmp_path / "trioforge.toml").write_text('database = "sqlite:///own.db"\n')
    assert resolve_database(None, cwd=tmp_path) == "sqlite:///own.db"


def test_broken_settings_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIOFORGE_DATABASE_URL", raising=False)
    (tmp_path / "trioforge.toml").write_text("database = \n")
    with pytest.raises(ConfigurationError, match=r"trioforge\.toml is not valid TOML"):
        resolve_database(None, cwd=tmp_path)
    (tmp_path / "trioforge.toml").write_text("database = 5\n")
    with pytest.raises(ConfigurationError, match="must be a URL"):
        resolve_database(None, cwd=tmp_path)


def test_the_password_comes_from_the_environment_variable_named_in_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRIOFORGE_DATABASE_URL", raising=False)
    monkeypatch.delenv("TRIOFORGE_PASSWORD_ENV", raising=False)
    (tmp_path / "trioforge.toml").write_text(
        'database = "postgresql://app@db.internal:5432/jobs"\npassword_env = "JOBS_DB_PW"\n'
    )
    with pytest.raises(ConfigurationError, match=r"\$JOBS_DB_PW"):
        resolve_database(None, cwd=tmp_path)
    monkeypatch.setenv("JOBS_DB_PW", "p@ss:/word")
    assert (
        resolve_database(None, cwd=tmp_path)
        == "postgresql://app:p%40ss%3A%2Fword@db.internal:5432/jobs"
    )
    # a URL that carries its own password, or is not PostgreSQL, is left alone
    assert resolve_database("postgresql://app:given@h/db", cwd=tmp_path).endswith(":given@h/db")
    assert resolve_database("sqlite:///x.db", cwd=tmp_path) == "sqlite:///x.db"


def test_the_listen_url_comes_from_argument_environment_then_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRIOFORGE_LISTEN_URL", raising=False)
    monkeypatch.delenv("TRIOFORGE_PASSWORD_ENV", raising=False)
    assert resolve_listen_url(None, cwd=tmp_path) is None  # LISTEN uses the database URL
    (tmp_path / "trioforge.toml").write_text(
        'listen_url = "postgresql://app@db:5432/jobs"\npassword_env = "JOBS_DB_PW"\n'
    )
    monkeypatch.setenv("JOBS_DB_PW", "pw")
    assert resolve_listen_url(None, cwd=tmp_path) == "postgresql://app:pw@db:5432/jobs"
    monkeypatch.setenv("TRIOFORGE_LISTEN_URL", "postgresql://env@db/jobs")
    assert resolve_listen_url(None, cwd=tmp_path) == "postgresql://env:pw@db/jobs"
    assert resolve_listen_url("postgresql://arg:x@db/jobs", cwd=tmp_path) == (
        "postgresql://arg:x@db/jobs"
    )
    with pytest.raises(ConfigurationError, match="listen URL is empty"):
        resolve_listen_url("", cwd=tmp_path)


def test_a_listen_url_is_for_postgresql_only() -> None:
    with pytest.raises(ConfigurationError, match="listen_url is for PostgreSQL"):
        backend_for_url("sqlite:///x.db", listen_url="postgresql://app@db/jobs")


def test_the_pooler_option_is_taken_out_of_the_url_with_its_search_path() -> None:
    pytest.importorskip("asyncpg")
    from trioforge.storage._pg_connection import pooler_mode
    from trioforge.storage.postgres import PostgresBackend

    url = "postgresql://app@bouncer:6432/jobs?pooler=transaction&search_path=tenant&sslmode=off"
    assert pooler_mode(url) == ("postgresql://app@bouncer:6432/jobs?sslmode=off", True, "tenant")
    assert pooler_mode("postgresql://app@db/jobs?search_path=s") == (
        "postgresql://app@db/jobs?search_path=s", False, None,
    )  # fmt: skip
    with pytest.raises(ConfigurationError, match="pooler=transaction"):
        pooler_mode("postgresql://app@db/jobs?pooler=session")
    backend = PostgresBackend(url, listen_url="postgresql://app@db:5432/jobs")
    assert (backend.url, backend.listen_url) == (
        "postgresql://app@bouncer:6432/jobs?sslmode=off", "postgresql://app@db:5432/jobs",
    )  # fmt: skip
    assert PostgresBackend(url).listen_url == backend.url  # no listen_url: through the pooler
