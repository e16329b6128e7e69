"""crmcal's command line run as a real process: one command to its end, or
``crmcal serve`` on a socket the test holds, waited for until it answers; and, for the
tests of what a command prints and answers (not of the process), one command run by
its entry point in the test's own process (``crmcal_here``)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from crmcal import cli
from crmcal.providers import parse_pool
from tests import plain
from tests.served import HANG_GUARD

CRMCAL = [sys.executable, "-m", "crmcal"]


def crmcal(*args: str, db_url: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CRMCAL_DATABASE_URL": db_url}
    return subprocess.run(
        [*CRMCAL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


class Ran:
    """What a command run in this process printed and its exit status, named as
    ``subprocess.CompletedProcess`` names them."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


class InProcess:
    """``crmcal <args>`` run by ``crmcal.cli.main``, as the installed command runs it,
    with the given ``CRMCAL_`` settings alone: what it prints and its exit status, in a
    fraction of a new process's time (a few seconds of imports each). For commands that
    change nothing of the process (no logging set up, no server started)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
        self.monkeypatch, self.capsys = monkeypatch, capsys

    def __call__(self, *args: str, **env: str) -> Ran:
        for name in [name for name in os.environ if name.startswith("CRMCAL_")]:
            self.monkeypatch.delenv(name)
        for name, value in env.items():
            self.monkeypatch.setenv(name, value)
        self.monkeypatch.setattr(sys, "argv", ["crmcal", *args])
        self.capsys.readouterr()
        try:
            cli.main()
            status = 0
        except SystemExit as stopped:
            status = stopped.code if isinstance(stopped.code, int) else int(bool(stopped.code))
        printed = self.capsys.readouterr()
        return Ran(status, printed.out, printed.err)


@pytest.fixture
def crmcal_here(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> InProcess:
    return InProcess(monkeypatch, capsys)


# What an in-process ``serve`` or ``worker`` is run with when the test is not about the
# parse pool: its processes would each import crmcal for a command that ends at once.
NO_PARSE_POOL = {"CRMCAL_PARSE_WORKERS": "0"}


@pytest.fixture
def parse_pool_kept() -> Iterator[None]:
    """The test process's parse pool sized as before the test: ``serve`` and ``worker``
    run in-process size it from their settings (``NO_PARSE_POOL``: none) and shut it
    down, and a later test of this process that parses in the pool would parse here."""
    workers = parse_pool._POOL.workers
    yield
    parse_pool.shutdown()
    parse_pool._POOL.workers = workers


def url_of(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def on_socket(argv: list[str], sock: socket.socket, **popen: Any) -> subprocess.Popen[bytes]:
    """``crmcal <argv>`` serving on ``sock``, bound here to a port the system picked and
    kept by the test, so no other process can take the port before or between starts."""
    fd = sock.fileno()
    return subprocess.Popen([*CRMCAL, *argv, "--fd", str(fd)], pass_fds=[fd], **popen)


def start_serve(sock: socket.socket, db_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """``crmcal serve`` on an embedded database and on ``sock``, its output going to
    ``log_path``."""
    # Its syncs stay under the events the parse pool is for: no pool processes to start.
    env = {**os.environ, "CRMCAL_DATABASE_URL": f"sqlite:///{db_path}", "CRMCAL_PARSE_WORKERS": "0"}
    with log_path.open("ab") as log:
        return on_socket(["serve"], sock, env=env, stdout=log, stderr=log)


def printed_token(log_path: Path) -> str:
    match = re.search(r"API token:\s+(crmcal_\S+)", log_path.read_text())
    assert match, log_path.read_text()
    return match.group(1)


def first_answer(
    process: subprocess.Popen[bytes],
    send: Callable[[], httpx.Response],
    ready: Callable[[httpx.Response], bool] = lambda _: True,
) -> httpx.Response:
    """The first answer of ``send()`` that is ``ready``, from a server that ``process`` is
    starting: asked again while the process lives and does not answer yet."""
    deadline = time.monotonic() + HANG_GUARD
    while True:
        try:
            answer = send()
            if ready(answer):
                return answer
        except httpx.TransportError:
            pass
        assert process.poll() is None, f"the server exited ({process.returncode})"
        assert time.monotonic() < deadline, f"no answer in {HANG_GUARD} s"
        time.sleep(0.1)


def wait_healthy(base: str, process: subprocess.Popen[bytes]) -> None:
    first_answer(process, lambda: plain.get(f"{base}/healthz", timeout=30),
                 lambda answer: answer.status_code == 200)  # fmt: skip
