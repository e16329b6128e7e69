"""Real CalDAV servers for the tests, started once per test session.

Radicale (htpasswd, so wrong passwords are refused; ``delay = 0``, or every 401
waits a second) and Xandikos (which checks no credentials over plain HTTP) run
on free 127.0.0.1 ports with their data in a private temporary directory (on
tmpfs when there is one), and are stopped by their process ids at the end. A
plain ``http.server`` stands in for "a web server that is not a calendar
server". Each test gets a fresh calendar collection through ``harness``,
parametrised over the provider kinds (``HARNESSES``), or through
``caldav_harness`` for CalDAV-only tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.providers.harness import CalDAVServer

HOST = "127.0.0.1"
CALDAV_KINDS = ["radicale", "xandikos"]
USER, PASSWORD = "alice", "wonderland"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited ({process.returncode}):\n{log.read_text()}")
        try:
            request = urllib.request.Request(url, method="OPTIONS")  # noqa: S310  # http://127.0.0.1
            urllib.request.urlopen(request, timeout=2).close()  # noqa: S310
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is up
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up within 30 s:\n{log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextlib.contextmanager
def _serve(argv: list[str], url: str, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        _wait_until_up(url, process, log)
        yield process
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def server_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the servers keep their data: in memory when possible.

    Both servers sync every write to disk (Radicale fsyncs, Xandikos commits to
    git); on tmpfs that costs nothing, which roughly halves the suite's time.
    """
    shm = Path("/dev/shm")  # noqa: S108  # a private directory is made inside
    if shm.is_dir() and os.access(shm, os.W_OK):
        root = Path(tempfile.mkdtemp(prefix="crmcal-tests-", dir=shm))
        try:
            yield root
        finally:
            shutil.rmtree(root, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("servers")


def _workdir(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def radicale(server_root: Path) -> Iterator[CalDAVServer]:
    workdir = _workdir(server_root, "radicale")
    port = free_port()
    users = workdir / "users"
    users.write_text(f"{USER}:{PASSWORD}\n")
    config = workdir / "config"
    config.write_text(
        f"""[server]
hosts = {HOST}:{port}

[auth]
type = htpasswd
htpasswd_filename = {users}
htpasswd_encryption = plain
# Every refused login would otherwise wait about a second.
delay = 0

[rights]
type = owner_only

[storage]
filesystem_folder = {workdir / "collections"}

[web]
type = none

[logging]
level = warning
"""
    )
    url = f"http://{HOST}:{port}/"
    argv = [sys.executable, "-m", "radicale", "--config", str(config)]
    with _serve(argv, url, workdir):
        yield CalDAVServer("radicale", url, USER, PASSWORD, checks_auth=True)


@pytest.fixture(scope="session")
def xandikos(server_root: Path) -> Iterator[CalDAVServer]:
    workdir = _workdir(server_root, "xandikos")
    port = free_port()
    url = f"http://{HOST}:{port}/"
    argv = [
        sys.executable, "-m", "xandikos.web", "--defaults",
        "-d", str(workdir / "data"), "--state-dir", str(workdir / "state"),
        "-l", HOST, "-p", str(port), "--no-detect-systemd",
    ]  # fmt: skip
    with _serve(argv, url, workdir):
        # Xandikos takes Basic credentials only over TLS; over HTTP it ignores them.
        yield CalDAVServer("xandikos", url, USER, PASSWORD, checks_auth=False)


@pytest.fixture(scope="session")
def plain_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A web server that is no calendar server: Python's ``http.server``."""
    workdir = tmp_path_factory.mktemp("plain-http")
    (workdir / "index.html").write_text("<html><body>Just a web page</body></html>")
    port = free_port()
    url = f"http://{HOST}:{port}/"
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", HOST,
            "--directory", str(workdir)]  # fmt: skip
    with _serve(argv, url, workdir):
        yield url


@pytest.fixture
def closed_port_url() -> str:
    """A URL nothing listens on."""
    return f"http://{HOST}:{free_port()}/"
