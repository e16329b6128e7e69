"""The README's curl walk-through works as written against a fresh ``crmcal serve``."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.cli_process import printed_token, start_serve, url_of, wait_healthy
from tests.served import bound_socket

README = Path(__file__).parent.parent / "README.md"


def walkthrough() -> str:
    text = README.read_text()
    marker = text.index("<!-- walkthrough:")
    match = re.search(r"```sh\n(.*?)```", text[marker:], re.S)
    assert match, "the walk-through block is missing from README.md"
    return match.group(1)


def json_values(text: str) -> list[dict[str, Any]]:
    """The JSON documents curl printed back to back."""
    decoder = json.JSONDecoder()
    values, position = [], 0
    while position < len(text):
        value, position = decoder.raw_decode(text, position)
        values.append(value)
        while position < len(text) and text[position].isspace():
            position += 1
    return values


def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    with bound_socket() as sock:
        base = url_of(sock)
        proc = start_serve(sock, tmp_path / "readme.db", log_path)
    try:
        wait_healthy(base, proc)
        script = walkthrough().replace("http://127.0.0.1:8000", base)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env={**os.environ, "CRMCAL_TOKEN": printed_token(log_path)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert result.returncode == 0, result.stderr
    replies = json_values(result.stdout)
    meeting = next(r for r in replies if r.get("subject") == "Demo with ACME")
    assert meeting["start"] == "2026-12-01T10:00:00+01:00"
    assert meeting["participants"][0]["email"] == "jane@acme.example"
    assert replies[-1]["detail"] == "end: must not be before start"
