"""Settings from the environment; the API key never shows itself."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from crossfid.cli import app
from crossfid.config import Secret, Settings, default_home
from crossfid.runtime.paths import DataDirs

KEY = "mp-key-0123456789abcdef"


def test_settings_from_environment(tmp_path):
    env = {
        "CROSSFID_HOME": str(tmp_path),
        "CROSSFID_DATABASE_URL": " postgresql://u@h/db ",
        "CROSSFID_DASK_SCHEDULER": "tcp://scheduler:8786",
        "MP_API_KEY": KEY,
    }
    settings = Settings.from_env(env)
    assert settings.home == tmp_path.resolve()
    assert settings.database_url == "postgresql://u@h/db"
    assert not settings.embedded
    assert settings.dask_scheduler == "tcp://scheduler:8786"
    assert settings.mp_api_key.reveal() == KEY
    assert DataDirs.from_settings(settings).pgdata == tmp_path.resolve() / "pgdata"


def test_defaults_are_embedded_in_the_user_data_dir():
    settings = Settings.from_env({})
    assert settings.embedded and settings.database_url is None
    assert settings.home == default_home()
    assert settings.home.name == "crossfid" and settings.home.is_relative_to(Path.home())
    with pytest.raises(RuntimeError, match="MP_API_KEY is not set"):
        settings.require_mp_api_key()


def test_api_key_never_shows_itself(caplog):
    settings = Settings.from_env({"MP_API_KEY": KEY})
    secret = settings.require_mp_api_key()
    renderings = (str(settings), repr(settings), str(secret), repr(secret), f"{secret}", f"{secret!r:>40}")
    assert not any(KEY in rendered for rendered in renderings)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("crossfid.test").info("settings: %s key: %s", settings, secret)
    assert KEY not in caplog.text
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    assert Secret(KEY) == secret and secret.reveal() == KEY


def test_api_key_is_not_stored_in_the_database(database_url, monkeypatch):
    monkeypatch.setenv("CROSSFID_DATABASE_URL", database_url)
    monkeypatch.setenv("MP_API_KEY", KEY)
    runner = CliRunner()
    for args in (["db", "init"], ["db", "status"], ["db", "url"], ["sql", "SELECT 1"], ["--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and KEY not in result.output
    with psycopg.connect(database_url) as conn:
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        for (table,) in tables:
            query = f"SELECT coalesce(string_agg(t::text, chr(10)), '') FROM \"{table}\" t"
            assert KEY not in conn.execute(query).fetchone()[0]
        settings = conn.execute("SELECT string_agg(setting, ' ') FROM pg_settings").fetchone()[0]
        assert KEY not in settings
