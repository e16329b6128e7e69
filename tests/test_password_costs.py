"""The tests' passwords are hashed at argon2id's lowest cost (``tests.conftest``), by the
same code that hashes a user's, except in the tests marked ``real_password_hashes``, which
see the cost crmcal uses; a sign-in works either way."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from crmcal.crm import passwords
from tests.conftest import Api, new_user
from tests.web_session import PASSWORD, sign_in


def _cost(password_hash: str) -> str:
    return password_hash.split("$")[3]


def test_a_tests_password_is_hashed_at_the_lowest_cost(client: TestClient, admin: Api) -> None:
    assert _cost(passwords.hash_password(PASSWORD)) == "m=8,t=1,p=1"
    new_user(admin, "ann@crm.test", password=PASSWORD)
    assert sign_in(client, "ann@crm.test").status_code == 303


@pytest.mark.real_password_hashes
def test_a_marked_test_sees_the_real_cost() -> None:
    made = passwords.hash_password(PASSWORD)
    assert _cost(made) == _cost(passwords._DUMMY) == "m=65536,t=3,p=4"
    assert passwords.verify(made, PASSWORD)
