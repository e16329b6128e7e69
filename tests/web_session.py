"""Signing in to the web pages as the tests do: a user's password, the login form's
token, and a browser-like client signed in as Ann with Bob for a colleague."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crmcal.config import Settings
from tests.conftest import Api, client_of, new_user

PASSWORD = "correct horse battery"


def login_token(client: TestClient, path: str = "/login") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


def sign_in(client: TestClient, email: str, password: str = PASSWORD, **extra: str) -> Any:
    token = login_token(client)
    return client.post("/login", data={"email": email, "password": password,
                                       "login_token": token, **extra},
                       follow_redirects=False)  # fmt: skip


@pytest.fixture
def people(admin: Api) -> tuple[Api, Api]:
    ann = new_user(admin, "ann@crm.test", password=PASSWORD, timezone="Europe/Berlin")
    bob = new_user(admin, "bob@crm.test", password=PASSWORD)
    return ann, bob


@pytest.fixture
def browser(db_url: str, people: tuple[Api, Api]) -> Iterator[TestClient]:
    with client_of(Settings(database_url=db_url)) as client:
        assert sign_in(client, "ann@crm.test").status_code == 303
        yield client


def csrf(client: TestClient) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/activities").text)
    assert found
    return found.group(1)
