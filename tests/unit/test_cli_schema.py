"""The embedded SQLite database sets itself up; a PostgreSQL database that cannot be used is one line
(its password masked) and exit status 1, instead of a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from autodetect.cli import app


def test_the_embedded_database_creates_its_schema_on_first_use(tmp_path):
    """On SQLite (the embedded default) every command migrates the database itself; no `db upgrade`."""
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine, text

    from autodetect.db import alembic_config
    from autodetect.settings import Settings

    runner = CliRunner()
    url = f"sqlite:///{tmp_path}/autodetect.db"
    base = ["--data-dir", str(tmp_path), "--database-url", url]
    for command in (["status"], ["models", "list"], ["catalogue"]):
        result = runner.invoke(app, [*base, *command])
        assert result.exit_code == 0, (command, result.output)
        assert "no schema" not in result.output and "Traceback" not in result.output
    result = runner.invoke(app, [*base, "tag", "--all"])
    assert result.exit_code == 1 and "no active model" in result.output, result.output
    head = ScriptDirectory.from_config(alembic_config(Settings(database_url=url))).get_current_head()
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head
    engine.dispose()
    result = runner.invoke(app, [*base, "status", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["listings"]["total"] == 0


def test_database_urls_are_shown_with_their_password_masked():
    import subprocess
    import sys

    url = "postgresql+psycopg2://u:S3CRET@127.0.0.1/x"
    for command in (["status"], ["db", "upgrade"]):
        result = subprocess.run([str(Path(sys.executable).parent / "autodetect"), "--database-url", url, *command],
                                capture_output=True, text=True, timeout=60)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output  # a failure (the database refuses), not a usage error
        assert "S3CRET" not in output and "u:***@127.0.0.1" in output.replace("\n", ""), output
        assert "Traceback" not in output
