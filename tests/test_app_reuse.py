"""The tests' app, built once a process (``tests.conftest.app_of``, ``client_of``): each
test still runs on its own settings and database, and finds the app as ``create_app``
makes it."""

from __future__ import annotations

import shutil
from pathlib import Path

from crmcal.config import Settings
from crmcal.web.app import create_app
from tests.conftest import _as_made, app_of, client_of, make_user


def _database(template: Path, path: Path) -> str:
    shutil.copy(template, path)
    return f"sqlite:///{path}"


def test_one_app_serves_each_test_on_its_own_database(
    sqlite_template: Path, tmp_path: Path
) -> None:
    first = _database(sqlite_template, tmp_path / "first.db")
    second = _database(sqlite_template, tmp_path / "second.db")
    _, first_token = make_user(first, email="ann@crm.test", name="Ann")
    _, second_token = make_user(second, email="bob@crm.test", name="Bob")
    me = "/api/v1/me"
    with client_of(Settings(database_url=first)) as client:
        app = client.app
        answer = client.get(me, headers={"Authorization": f"Bearer {first_token}"})
        assert answer.json()["email"] == "ann@crm.test"
    with client_of(Settings(database_url=second)) as client:
        assert client.app is app  # built once
        assert client.get(me, headers={"Authorization": f"Bearer {first_token}"}).status_code == 401
        answer = client.get(me, headers={"Authorization": f"Bearer {second_token}"})
        assert answer.json()["email"] == "bob@crm.test"


def test_an_app_served_at_another_address_is_the_same_app_on_its_own_settings(
    tmp_path: Path,
) -> None:
    database = f"sqlite:///{tmp_path}/unused.db"
    with app_of(Settings(database_url=database, base_url="http://127.0.0.1:1")) as first:
        pass
    with app_of(Settings(database_url=database, base_url="http://127.0.0.1:2")) as second:
        assert second is first  # the address is read from the state, as each request asks
        assert second.state.settings.base_url == "http://127.0.0.1:2"


def test_a_setting_the_app_keeps_as_built_gets_an_app_of_its_own(
    sqlite_template: Path, tmp_path: Path
) -> None:
    url = _database(sqlite_template, tmp_path / "crmcal.db")
    _, token = make_user(url, email="ann@crm.test", name="Ann")
    body = {"name": "x" * 4000}
    with client_of(Settings(database_url=url)) as client:
        usual = client.app
        with client_of(Settings(database_url=url, max_body_bytes=1024)) as small:
            assert small.app is not usual  # the first is in use, and its limit is another
            answer = small.post(
                "/api/v1/activities", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            assert answer.status_code == 413


def test_a_reused_app_has_the_state_of_a_new_one(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/unused.db")
    new = create_app(settings, background_jobs=False)
    used = create_app(settings, background_jobs=False)
    earlier = used.state.failed_signins
    used.state.left = "by an earlier test"
    used.dependency_overrides[create_app] = lambda: None
    _as_made(used, settings)
    assert vars(used.state)["_state"].keys() == vars(new.state)["_state"].keys()
    assert used.state.settings is settings
    assert used.state.failed_signins is not earlier
    assert used.dependency_overrides == {}
