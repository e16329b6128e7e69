"""An outside fuzzer reads the OpenAPI document and finds nothing: schemathesis runs every
check (statuses, bodies, headers, positive and negative data, the stateful phase that
follows the document's links) against a crmcal server on 127.0.0.1.

schemathesis lives in ``.venv-schemathesis`` (built here when missing, from the pin in
``tests/schemathesis/requirements.txt``): its ``requests`` and caldav's ``niquests`` do
not share one environment. The run is short and seeded; docs/api.md shows a longer one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crmcal.config import Settings
from crmcal.web.app import create_app
from tests.conftest import make_user
from tests.served import served_app

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent / "schemathesis"
VENV = ROOT / ".venv-schemathesis"
CLI = VENV / "bin" / "schemathesis"


def _installed() -> Path:
    """The pinned schemathesis CLI, installed into its own venv on first use."""
    stamp = VENV / ".installed"
    wanted = (HERE / "requirements.txt").read_text()
    if not stamp.exists() or stamp.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "-r", str(HERE / "requirements.txt")], check=True, timeout=900)
        stamp.write_text(wanted)
    return CLI


@pytest.mark.parametrize("backend", ["sqlite"])
def test_schemathesis_finds_nothing(backend: str, tmp_path: Path, sqlite_template: Path) -> None:
    cli = _installed()
    db = tmp_path / "crmcal.db"
    db.write_bytes(sqlite_template.read_bytes())
    db_url = f"sqlite:///{db}"
    _, token = make_user(db_url, email="admin@crm.test", name="Admin", is_admin=True)
    app = create_app(Settings(database_url=db_url), background_jobs=False)
    with served_app(app) as url:
        command = [
            str(cli), "--config-file", str(HERE / "schemathesis.toml"), "run",
            f"{url}/openapi.json", "-H", f"Authorization: Bearer {token}",
            "--checks", "all", "--max-examples", "5", "--seed", "17", "--workers", "1",
            # The coverage phase's thousands of deterministic cases take minutes on a
            # busy machine; the longer run in docs/api.md includes it.
            "--phases", "examples,fuzzing,stateful",
            "--exclude-tag", "connections", "--request-timeout", "30",
            # Revoking the token the run speaks with would leave it only 401s to test.
            "--exclude-operation-id", "revoke_my_token",
            "--max-failures", "20", "--no-color",
        ]  # fmt: skip
        env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
        ran = subprocess.run(
            command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
        )
    assert ran.returncode == 0, ran.stdout[-20000:] + ran.stderr[-5000:]
    assert "Stateful" in ran.stdout
    assert "Authentication failed" not in ran.stdout, ran.stdout[-5000:]
