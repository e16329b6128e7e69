"""An outside fuzzer reads the OpenAPI document and finds nothing: schemathesis runs every
check (statuses, bodies, headers, positive and negative data, the stateful phase that
follows the document's links) against a crmcal server on 127.0.0.1.

The run docs/api.md shows, made from the repository, so that it reads
``schemathesis.toml`` there and nothing else (no hooks, no other configuration), over
every operation. And the connection endpoints with accounts that exist
(``tests/schemathesis/connections.toml``), one run and one user per kind: a Radicale of
this test's own, and a refresh token that the Google and the Microsoft emulators both
accept, on loopback addresses crmcal is allowed to reach here; so connecting succeeds
(201) and the operations on a connection are reached through the document's links.

schemathesis lives in ``.venv-schemathesis`` (built here when missing, from the pin in
``tests/schemathesis/requirements.txt``): its ``requests`` and caldav's ``niquests`` do
not share one environment. The runs are short and seeded; docs/api.md shows longer ones.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from crmcal.config import Settings
from crmcal.emulators.google import GoogleState
from crmcal.emulators.google import create_app as create_google
from crmcal.emulators.microsoft import MicrosoftState
from crmcal.emulators.microsoft import create_app as create_graph
from crmcal.web.app import create_app
from tests.caldav_servers import PASSWORD, USER, serve_radicale
from tests.conftest import issue_token_in, make_user, run
from tests.served import served_app

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent / "schemathesis"
VENV = ROOT / ".venv-schemathesis"
CLI = VENV / "bin" / "schemathesis"
CONNECT = "/api/v1/connections"


def _installed() -> Path:
    """The pinned schemathesis CLI, installed into its own venv on first use (by one
    process at a time: the runs may start at once on parallel workers)."""
    stamp = VENV / ".installed"
    wanted = (HERE / "requirements.txt").read_text()
    VENV.mkdir(exist_ok=True)
    with (VENV / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists() or stamp.read_text() != wanted:
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
            pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
            subprocess.run([*pip, "-r", str(HERE / "requirements.txt")], check=True, timeout=900)
            stamp.write_text(wanted)
    return CLI


def _one_grant(google: GoogleState, graph: MicrosoftState) -> tuple[str, str, str]:
    """A refresh token both emulators accept, each for an account of its own; and the
    id of each account's calendar (Google's, then Microsoft's)."""
    token = "fuzz-" + uuid.uuid4().hex
    google.create_account("fuzz-google@example.test")
    google.refresh_tokens[token] = "fuzz-google@example.test"
    issued = graph.create_account("fuzz-graph@example.test")["refresh_token"]
    graph.refresh_tokens[token] = graph.refresh_tokens[issued]
    calendars = graph.mailboxes["fuzz-graph@example.test"].calendars.values()
    return token, "fuzz-google@example.test", next(c.id for c in calendars if c.is_default)


def _fuzz(
    cli: Path,
    url: str,
    token: str,
    *extra: str,
    env: dict[str, str],
    report: Path | None = None,
    phases: str = "examples,fuzzing,stateful",
) -> str:
    """The documented command, shortened (few examples, a fixed seed, no coverage phase:
    its thousands of deterministic cases take minutes; docs/api.md's run includes it),
    run from the repository; answers its output after checking it found nothing."""
    command = [
        str(cli), *extra, "run", f"{url}/openapi.json", "-H", f"Authorization: Bearer {token}",
        "--checks", "all", "--max-examples", "2", "--seed", "17", "--workers", "1",
        "--phases", phases, "--request-timeout", "60",
        "--max-failures", "20", "--no-color",
    ]  # fmt: skip
    if report is not None:  # which requests were made, and their answers
        command[command.index("run") :] = [
            *command[command.index("run") :], "--include-tag", "connections",
            "--report", "har", "--report-har-path", str(report),
        ]  # fmt: skip
    ran = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert ran.returncode == 0, ran.stdout[-20000:] + ran.stderr[-5000:]
    assert "Authentication failed" not in ran.stdout, ran.stdout[-5000:]
    return ran.stdout


def _links_covered(output: str) -> int:
    links = re.search(r"API Links:\s+(\d+) covered", output)
    assert links is not None, output[-3000:]
    return int(links.group(1))


def _connected(har: Path) -> set[str]:
    """The providers of the connections a run made (201)."""
    made = set()
    for entry in json.loads(har.read_text())["log"]["entries"]:
        request = entry["request"]
        answer = entry["response"]
        post = request["method"] == "POST" and urlsplit(request["url"]).path == CONNECT
        if post and answer["status"] == 201:
            made.add(json.loads(answer["content"]["text"])["provider"])
    return made


# The runs, each a test of its own (with its own database and servers), so that a
# parallel run spreads them over its workers: one per kind of account on the connection
# endpoints, and the plain run docs/api.md shows, in two: its phases on each operation
# (examples, fuzzing), and its stateful phase (the document's links).
RUNS = ["caldav", "google", "microsoft", "plain", "plain-stateful"]


# What the runs but the CalDAV one send as a CalDAV account: a field their kind ignores.
UNUSED_CALDAV = {"url": "http://127.0.0.1:9/", "username": USER, "password": PASSWORD}


@pytest.fixture
def caldav_account(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A Radicale of the CalDAV run's own (the one run that connects to it), with one
    calendar to sync with: the account's fields, and its calendar's URL."""
    caldav_dir = tmp_path / "radicale"
    caldav_dir.mkdir()
    with serve_radicale(caldav_dir) as caldav:
        made = caldav.client().principal().make_calendar(name="Fuzzed", cal_id=uuid.uuid4().hex)
        yield {"url": caldav.url, "username": caldav.username, "password": caldav.password,
               "calendar": str(made.url)}  # fmt: skip


@pytest.mark.parametrize("kind", RUNS)
def test_schemathesis_finds_nothing(
    tmp_path: Path, sqlite_template: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    cli = _installed()
    db = tmp_path / "crmcal.db"
    db.write_bytes(sqlite_template.read_bytes())
    db_url = f"sqlite:///{db}"
    # Two tokens: the run's own, and one it can find in `GET /me/tokens` and revoke.
    admin_id, _ = make_user(db_url, email="admin@crm.test", name="Admin", is_admin=True)
    token = run(issue_token_in(db_url, admin_id))
    # A user has one connection at a time: a user of its own for the kind of account.
    user_token = make_user(db_url, email=f"{kind}@crm.test", name=kind)[1]
    # Radicale only for the run that connects to it (starting one costs about a second).
    caldav = request.getfixturevalue("caldav_account") if kind == "caldav" else UNUSED_CALDAV
    google_state, graph_state = GoogleState(), MicrosoftState()
    grant, google_calendar, graph_calendar = _one_grant(google_state, graph_state)
    with (
        served_app(create_google(google_state)) as google,
        served_app(create_graph(graph_state)) as graph,
    ):
        settings = Settings(
            database_url=db_url, secret_key="fuzz-key", allow_private_networks=True,
            google_api_url=google, google_oauth_url=google, google_client_id="fuzz",
            google_client_secret="fuzz", microsoft_api_url=graph, microsoft_oauth_url=graph,
            microsoft_client_id="fuzz", microsoft_client_secret="fuzz",
        )  # fmt: skip
        with served_app(create_app(settings, background_jobs=False)) as url:
            env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
            if kind.startswith("plain"):
                # The run docs/api.md shows: every operation, nothing but schemathesis.toml.
                phases = "stateful" if kind == "plain-stateful" else "examples,fuzzing"
                plain = _fuzz(cli, url, token, env=env, phases=phases)
            else:
                calendars = {"caldav": caldav.get("calendar", ""), "google": google_calendar,
                             "microsoft": graph_calendar}  # fmt: skip
                fuzz_env = env | {
                    "CRMCAL_FUZZ_CALDAV_URL": caldav["url"],
                    "CRMCAL_FUZZ_CALDAV_USERNAME": caldav["username"],
                    "CRMCAL_FUZZ_CALDAV_PASSWORD": caldav["password"],
                    "CRMCAL_FUZZ_REFRESH_TOKEN": grant,
                    "CRMCAL_FUZZ_PROVIDER": kind,
                    "CRMCAL_FUZZ_CALENDAR_ID": calendars[kind],
                }
                har = tmp_path / f"{kind}.har"
                config = ("--config-file", str(HERE / "connections.toml"))
                out = _fuzz(cli, url, user_token, *config, env=fuzz_env, report=har)
    if not kind.startswith("plain"):
        assert _links_covered(out) > 0, out[-5000:]
        # Connecting succeeded with the kind's account, its 201 fuzzed too.
        assert _connected(har) == {kind}
        return
    selected = re.search(r"Selected: (\d+)/(\d+)", plain)
    assert selected is not None, plain[-3000:]
    assert selected.group(1) == selected.group(2), plain[-3000:]
    if kind == "plain":
        return
    # The stateful phase follows the document's links from the records it makes and
    # lists, the tokens' list to their revocation among them.
    assert _links_covered(plain) >= 6, plain[-5000:]
    assert "No links point to this operation" not in plain, plain[-5000:]
