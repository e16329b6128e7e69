"""An outside fuzzer reads the OpenAPI document and finds nothing: schemathesis runs every
check (statuses, bodies, headers, positive and negative data, the stateful phase that
follows the document's links) against a crmcal server on 127.0.0.1, the connection
endpoints included: they reach a Radicale of this test's own and the Google and
Microsoft emulators, on loopback addresses crmcal is allowed to reach here.

schemathesis lives in ``.venv-schemathesis`` (built here when missing, from the pin in
``tests/schemathesis/requirements.txt``): its ``requests`` and caldav's ``niquests`` do
not share one environment. The run is short and seeded; docs/api.md shows a longer one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from crmcal.config import Settings
from crmcal.emulators.google import GoogleState
from crmcal.emulators.google import create_app as create_google
from crmcal.emulators.microsoft import MicrosoftState
from crmcal.emulators.microsoft import create_app as create_graph
from crmcal.web.app import create_app
from tests.caldav_servers import serve_radicale
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
    caldav_dir = tmp_path / "radicale"
    caldav_dir.mkdir()
    with (
        serve_radicale(caldav_dir) as caldav,
        served_app(create_google(GoogleState())) as google,
        served_app(create_graph(MicrosoftState())) as graph,
    ):
        # The account the fuzzer connects has one calendar to sync with.
        caldav.client().principal().make_calendar(name="Fuzzed", cal_id=uuid.uuid4().hex)
        settings = Settings(
            database_url=db_url, secret_key="fuzz-key", allow_private_networks=True,
            google_api_url=google, google_oauth_url=google, google_client_id="fuzz",
            google_client_secret="fuzz", microsoft_api_url=graph, microsoft_oauth_url=graph,
            microsoft_client_id="fuzz", microsoft_client_secret="fuzz",
        )  # fmt: skip
        with served_app(create_app(settings, background_jobs=False)) as url:
            command = [
                str(cli), "--config-file", str(HERE / "connections.toml"), "run",
                f"{url}/openapi.json", "-H", f"Authorization: Bearer {token}",
                "--checks", "all", "--max-examples", "3", "--seed", "17", "--workers", "1",
                # The coverage phase's thousands of deterministic cases take minutes on a
                # busy machine; the longer run in docs/api.md includes it.
                "--phases", "examples,fuzzing,stateful", "--request-timeout", "60",
                "--max-failures", "20", "--no-color",
            ]  # fmt: skip
            env = {
                **os.environ,
                "SCHEMATHESIS_HOOKS": str(HERE / "hooks.py"),
                "CRMCAL_FUZZ_CALDAV_URL": caldav.url,
                "CRMCAL_FUZZ_CALDAV_USERNAME": caldav.username,
                "CRMCAL_FUZZ_CALDAV_PASSWORD": caldav.password,
            }
            ran = subprocess.run(
                command, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path
            )
    assert ran.returncode == 0, ran.stdout[-20000:] + ran.stderr[-5000:]
    # Every operation was tested, connections included, and the stateful phase followed
    # links from created records to the operations on them.
    selected = re.search(r"Selected: (\d+)/(\d+)", ran.stdout)
    assert selected is not None, ran.stdout[-3000:]
    assert selected.group(1) == selected.group(2), ran.stdout[-3000:]
    links = re.search(r"API Links:\s+(\d+) covered", ran.stdout)
    assert links is not None, ran.stdout[-3000:]
    assert int(links.group(1)) > 0, ran.stdout[-3000:]
    assert "Authentication failed" not in ran.stdout, ran.stdout[-5000:]
