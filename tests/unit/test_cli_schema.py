"""Commands that need the database say what to do when it has no schema, instead of a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from autodetect.cli import app


def test_commands_without_a_schema_say_run_db_upgrade(tmp_path):
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path), "--database-url", f"sqlite:///{tmp_path}/autodetect.db"]
    for command in (["status"], ["tag", "--all"], ["models", "list"], ["catalogue"]):
        result = runner.invoke(app, [*base, *command])
        assert result.exit_code == 2, (command, result.output)
        assert "no schema yet" in result.output and "autodetect db upgrade" in " ".join(result.output.split())
        assert "Traceback" not in result.output
    assert runner.invoke(app, [*base, "db", "upgrade"]).exit_code == 0
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
        assert result.returncode == 2, output
        assert "S3CRET" not in output and "u:***@127.0.0.1" in output.replace("\n", ""), output
        assert "Traceback" not in output
