"""Numeric settings: anything but ASCII digits (and a point, for seconds) in range is
refused with one line naming the variable, its value and the range, also by the CLI."""

from __future__ import annotations

import sys

import pytest

from crmcal import cli
from crmcal.config import ConfigError, Settings

# Each numeric setting, the field it fills, a value past its range, and its range.
WHOLE = [
    ("CRMCAL_POLL_SECONDS", "poll_seconds", "0", "at least 1"),
    ("CRMCAL_CALDAV_SERVER_CONCURRENCY", "caldav_server_concurrency", "1001", "from 1 to 1000"),
    ("CRMCAL_GOOGLE_PROJECT_QUOTA", "google_project_quota", "10000001", "from 0 to 10000000"),
    ("CRMCAL_PARSE_WORKERS", "parse_workers", "65", "from 0 to 64"),
    ("CRMCAL_DATABASE_POOL_SIZE", "database_pool_size", "1001", "from 1 to 1000"),
    ("CRMCAL_SERIES_HORIZON_DAYS", "series_horizon_days", "3651", "from 1 to 3650 days"),
]
SECONDS = [
    ("CRMCAL_RETRY_BACKOFF", "retry_backoff", "61", "from 0 to 60"),
    ("CRMCAL_WORKER_HEARTBEAT_SECONDS", "worker_heartbeat", "0.1", "from 0.2 to 600"),
    ("CRMCAL_LEASE_SECONDS", "lease_seconds", "3601", "from 1 to 3600"),
    ("CRMCAL_SYNC_MAX_SECONDS", "sync_max_seconds", "604801", "from 1 to 604800"),
]
# Unicode digits (superscript two, Arabic-Indic three, fullwidth four), a sign, an
# exponent, digit separators, a no-break space, and a number too long for int().
WRONG = ["\u00b2", "\u0663", "\uff14", "-1", "+3", "1e3", "1_0", "\u00a03", "nan", "9" * 5000]


@pytest.mark.parametrize(("name", "field", "too_big", "bounds"), WHOLE + SECONDS)
@pytest.mark.parametrize("wrong", [*WRONG, "too big"])
def test_a_number_setting_that_is_no_number_in_range_is_refused_in_one_line(
    name: str, field: str, too_big: str, bounds: str, wrong: str
) -> None:
    value = too_big if wrong == "too big" else wrong
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({name: value})
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{name} must be a ")
    assert bounds in message
    assert repr(value) in message


@pytest.mark.parametrize(("name", "field", "too_big", "bounds"), WHOLE + SECONDS)
def test_a_number_setting_in_ascii_digits_is_read_and_blank_is_the_default(
    name: str, field: str, too_big: str, bounds: str
) -> None:
    default = getattr(Settings.from_env({}), field)
    assert getattr(Settings.from_env({name: ""}), field) == default
    assert getattr(Settings.from_env({name: "  "}), field) == default
    assert getattr(Settings.from_env({name: " 3\n"}), field) == 3  # an env file's blanks


def test_seconds_take_a_fraction_and_whole_numbers_do_not() -> None:
    assert Settings.from_env({"CRMCAL_RETRY_BACKOFF": "0.25"}).retry_backoff == 0.25
    assert Settings.from_env({"CRMCAL_LEASE_SECONDS": "2."}).lease_seconds == 2
    assert Settings.from_env({"CRMCAL_WORKER_HEARTBEAT_SECONDS": ".5"}).worker_heartbeat == 0.5
    for wrong in ("2.5", "1.", ".", "3.0"):
        with pytest.raises(ConfigError, match="CRMCAL_PARSE_WORKERS must be a whole number"):
            Settings.from_env({"CRMCAL_PARSE_WORKERS": wrong})
    with pytest.raises(ConfigError, match="CRMCAL_RETRY_BACKOFF"):
        Settings.from_env({"CRMCAL_RETRY_BACKOFF": "."})


@pytest.mark.parametrize("command", ["serve", "worker"])
@pytest.mark.parametrize(
    ("name", "bounds"),
    [("CRMCAL_CALDAV_SERVER_CONCURRENCY", "1 to 1000"), ("CRMCAL_PARSE_WORKERS", "0 to 64")],
)
def test_the_cli_stops_on_a_unicode_digit_with_one_line(
    command: str,
    name: str,
    bounds: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(name, "\u00b2")
    monkeypatch.setattr(sys, "argv", ["crmcal", command])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert err == f"error: {name} must be a whole number from {bounds}, got '\u00b2'\n"


@pytest.mark.parametrize("wrong", ["0", "3651", "\u00b2", "a year"])
def test_a_series_horizon_out_of_range_is_refused_not_clamped(
    wrong: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The horizon was clamped into its range (or taken as 365 when no number) where
    it was used; it is refused like every other number when crmcal starts (a worker's
    start: one that did not check would stop on its SQLite database, not serve), and
    where the CRM reads it."""
    from crmcal.crm import series

    name = "CRMCAL_SERIES_HORIZON_DAYS"
    monkeypatch.setenv(name, " 30 ")
    assert Settings.from_env().series_horizon_days == 30
    assert series.horizon().days == 30
    monkeypatch.setenv(name, wrong)
    message = f"{name} must be a whole number from 1 to 3650 days, got {wrong!r}"
    for read in (Settings.from_env, series.horizon):
        with pytest.raises(ConfigError) as refused:
            read()
        assert str(refused.value) == message
    monkeypatch.delenv("CRMCAL_DATABASE_URL", raising=False)
    monkeypatch.setattr(sys, "argv", ["crmcal", "worker"])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 1
    assert capsys.readouterr().err == f"error: {message}\n"
