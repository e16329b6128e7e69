"""``crmcal demo`` (what ``make demo`` runs): everything starts on 127.0.0.1 with the
seeded data, the printed logins work, Ctrl-C stops it all, and --data-dir keeps state."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from crmcal.tls import tls
from tests import plain

ROOT = Path(__file__).parent.parent
PATIENCE = 600  # seconds the demo may take to start on a busy machine: a hang guard, not a bound


def four_free_ports() -> int:
    """A port whose three successors are free too."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base > 65000:
            continue
        try:
            for port in range(base, base + 4):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise AssertionError("no four free ports in a row")


def start(port: int, data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "crmcal", "demo", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip


def wait_for_banner(process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + PATIENCE
    while "Press Ctrl-C to stop." not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    return log.read_text()


def start_on_free_ports(data_dir: Path, log: Path) -> tuple[int, subprocess.Popen[bytes], str]:
    """The demo on four free ports in a row, and its banner. The demo takes a port and the
    three after it, so they are found by probing, and another process on this machine can
    take one before the demo binds it: then the demo stops at once, saying so, and starts
    again on other ports."""
    for _ in range(5):
        port = four_free_ports()
        process = start(port, data_dir, log)
        deadline = time.monotonic() + PATIENCE
        while "Press Ctrl-C to stop." not in log.read_text():
            if process.poll() is not None:
                said = log.read_text() + "".join(
                    p.read_text(errors="replace") for p in data_dir.glob("radicale/*.log")
                )
                assert "in use" in said, said
                shutil.rmtree(data_dir, ignore_errors=True)  # the next try starts afresh
                break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        else:
            return port, process, log.read_text()
    raise AssertionError("five sets of free ports were each taken before the demo bound them")


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=60)


def test_demo_starts_everything_seeded_and_stops_cleanly(tmp_path: Path) -> None:
    make_demo = (ROOT / "Makefile").read_text().split("\ndemo:")[1].split("\n\n")[0]
    assert "crmcal demo" in make_demo
    data = tmp_path / "demo-data"
    log = tmp_path / "demo.log"
    port, process, banner = start_on_free_ports(data, log)
    try:
        app = f"http://127.0.0.1:{port}"
        assert app in banner
        login = re.search(r"Sign in as\s+(\S+) / (\S+)", banner)
        assert login
        caldav = re.search(r"CalDAV \(Radicale\)\s+(\S+)\s+user (\S+)\s+password (\S+)", banner)
        assert caldav
        with httpx.Client(verify=tls(), base_url=app, timeout=30, follow_redirects=False) as client:
            page = client.get("/login")
            token = re.search(r'name="login_token" value="([^"]+)"', page.text)
            assert token
            signed = client.post("/login", data={"email": login.group(1),
                                                 "password": login.group(2),
                                                 "login_token": token.group(1)})  # fmt: skip
            assert signed.status_code == 303
            week = client.get("/calendar")
            assert "ACME kick-off" in week.text
            assert "Busy" in week.text  # Bob's private appointment
            assert client.get("/docs").status_code == 200
        google = plain.get(f"http://127.0.0.1:{port + 1}/", timeout=30).text
        assert "Lunch with Maria" in google
        microsoft = plain.get(f"http://127.0.0.1:{port + 2}/", timeout=30).text
        assert "Quarterly review" in microsoft
        dav = plain.request("PROPFIND", caldav.group(1) + caldav.group(2) + "/",
                            auth=(caldav.group(2), caldav.group(3)), headers={"Depth": "1"},
                            timeout=30)  # fmt: skip
        assert dav.status_code == 207
        assert "Holidays" in dav.text
    finally:
        code = stop(process)
    assert code == 0, log.read_text()
    assert log.read_text().rstrip().endswith("crmcal demo stopped.")
    for port_in_use in range(port, port + 4):
        with socket.socket() as sock:  # everything let go of its port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port_in_use))

    # A second run on the same data keeps it, without seeding twice.
    process = start(port, data, log)
    try:
        wait_for_banner(process, log)
        google = plain.get(f"http://127.0.0.1:{port + 1}/", timeout=30).text
        assert google.count("Lunch with Maria") == 1
    finally:
        assert stop(process) == 0
