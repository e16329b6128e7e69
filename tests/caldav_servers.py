"""Real CalDAV servers for the tests, started once per test session.

Radicale (htpasswd, so wrong passwords are refused; ``delay = 0``, or every 401
waits a second) and Xandikos (which checks no credentials over plain HTTP) listen
on 127.0.0.1 port 0 — the system picks a free port as they bind, and the tests
read which one from the process's own sockets, so no other process can take the
port between a probe and the start — with their data in a private temporary
directory (on tmpfs when there is one), and are stopped by their process ids at
the end. A
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
from typing import Any

import pytest

from crmcal.providers.caldav_discovery import forget_discovered
from tests.providers.harness import CalDAVServer

HOST = "127.0.0.1"
CALDAV_KINDS = ["radicale", "xandikos"]
USER, PASSWORD = "alice", "wonderland"


# How long a server may take to start on a busy machine: a generous bound on a failure,
# never on how fast a passing start is.
PATIENCE = 600


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections while the block runs: bound by this
    process but not listening, so no other process can start listening on it meanwhile."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        yield int(sock.getsockname()[1])


def listening_port(pid: int) -> int | None:
    """The TCP port process ``pid`` listens on (read from /proc), or None while it has
    none: how a server told to bind port 0 says which port it got."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return None
    inodes = set()
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                return int(local.rpartition(":")[2], 16)
    return None


def wait_for_port(process: subprocess.Popen[Any], log: Path) -> int:
    """The port a server started on port 0 listens on, once it does."""
    deadline = time.monotonic() + PATIENCE
    while (port := listening_port(process.pid)) is None:
        if process.poll() is not None:
            raise RuntimeError(f"server exited ({process.returncode}):\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no listening socket after {PATIENCE} s:\n{log.read_text()}")
        time.sleep(0.05)
    return port


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited ({process.returncode}):\n{log.read_text()}")
        try:
            request = urllib.request.Request(url, method="OPTIONS")  # noqa: S310  # http://127.0.0.1
            urllib.request.urlopen(request, timeout=30).close()  # noqa: S310
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is up
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up within {PATIENCE} s:\n{log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=60)


@contextlib.contextmanager
def _serve(argv: list[str], workdir: Path) -> Iterator[str]:
    """Run a server told to listen on 127.0.0.1 port 0; yields its URL once it answers."""
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        url = f"http://{HOST}:{wait_for_port(process, log)}/"
        _wait_until_up(url, process, log)
        yield url
    finally:
        _stop(process)


@pytest.fixture(autouse=True)
def no_discovery_kept() -> Iterator[None]:
    """Each test starts as a new worker process does: no CalDAV discovery kept from
    another test (tests share the servers' one user, and set its addresses apart)."""
    forget_discovered()
    yield
    forget_discovered()


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


# Radicale itself: its configuration refuses port 0, though its server binds it fine.
RADICALE_ON_PORT_0 = """
import runpy
import radicale.config
checked = radicale.config.port_int
radicale.config.port_int = lambda value: 0 if str(value).strip() == "0" else checked(value)
runpy.run_module("radicale", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="session")
def radicale(server_root: Path) -> Iterator[CalDAVServer]:
    with serve_radicale(_workdir(server_root, "radicale")) as server:
        yield server


@contextlib.contextmanager
def serve_radicale(workdir: Path) -> Iterator[CalDAVServer]:
    """A Radicale of its own in ``workdir``, for a test whose account nobody else uses."""
    users = workdir / "users"
    users.write_text(f"{USER}:{PASSWORD}\n")
    config = workdir / "config"
    config.write_text(
        f"""[server]
hosts = {HOST}:0

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
    argv = [sys.executable, "-c", RADICALE_ON_PORT_0, "--config", str(config)]
    with _serve(argv, workdir) as url:
        yield CalDAVServer("radicale", url, USER, PASSWORD, checks_auth=True)


@pytest.fixture(scope="session")
def xandikos(server_root: Path) -> Iterator[CalDAVServer]:
    workdir = _workdir(server_root, "xandikos")
    argv = [
        sys.executable, "-m", "xandikos.web", "--defaults",
        "-d", str(workdir / "data"), "--state-dir", str(workdir / "state"),
        "-l", HOST, "-p", "0", "--no-detect-systemd",
    ]  # fmt: skip
    with _serve(argv, workdir) as url:
        # Xandikos takes Basic credentials only over TLS; over HTTP it ignores them.
        yield CalDAVServer("xandikos", url, USER, PASSWORD, checks_auth=False)


@pytest.fixture(scope="session")
def plain_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A web server that is no calendar server: Python's ``http.server``."""
    workdir = tmp_path_factory.mktemp("plain-http")
    (workdir / "index.html").write_text("<html><body>Just a web page</body></html>")
    argv = [sys.executable, "-m", "http.server", "0", "--bind", HOST,
            "--directory", str(workdir)]  # fmt: skip
    with _serve(argv, workdir) as url:
        yield url


@pytest.fixture
def closed_port_url() -> Iterator[str]:
    """A URL nothing listens on (nor can, while the test runs)."""
    with closed_port() as port:
        yield f"http://{HOST}:{port}/"
