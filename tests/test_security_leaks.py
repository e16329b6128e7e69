"""Nothing secret or internal leaks: URLs with passwords, error sentences, /healthz,
access logs, and API tokens that can be listed without their value and revoked."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from crmcal.config import Settings
from crmcal.web.app import create_app
from tests.caldav_servers import closed_port
from tests.conftest import Api, client_of, issue_token_in, make_user, new_user, run

V1 = "/api/v1"
INTERNALS = ("HTTPConnectionPool", "object at 0x", "Errno", "Traceback", "httpx", "urllib3")


def caldav(url: str) -> dict[str, str]:
    return {"provider": "caldav", "url": url, "username": "u", "password": "p"}


@pytest.fixture
def guarded(db_url: str) -> Iterator[Api]:
    """A server that refuses private addresses, as in production."""
    with client_of(Settings(database_url=db_url, secret_key="k" * 43)) as client:
        user_id, token = make_user(db_url, email="g@crm.test", name="G")
        yield Api(client, token, user_id)


def test_a_password_in_the_url_is_refused(guarded: Api) -> None:
    answer = guarded.post(f"{V1}/connections", json=caldav("https://alice:secret@dav.example/"))
    assert answer.status_code == 422
    assert "password" in answer.json()["detail"]
    assert "secret" not in answer.text


def test_refused_addresses_give_no_port_oracle(guarded: Api) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        open_port = listener.getsockname()[1]
        with closed_port() as shut:
            answers = {
                guarded.post(f"{V1}/connections", json=caldav(f"http://127.0.0.1:{port}/")).text
                for port in (open_port, shut)
            }
    assert len(answers) == 1, answers
    assert "private or loopback" in answers.pop()


def test_connect_failures_are_one_sentence_without_internals(db_url: str) -> None:
    settings = Settings(database_url=db_url, secret_key="k" * 43, allow_private_networks=True)
    with client_of(settings) as client:
        user_id, token = make_user(db_url, email="c@crm.test", name="C")
        with closed_port() as shut:
            answer = Api(client, token, user_id).post(
                f"{V1}/connections", json=caldav(f"http://127.0.0.1:{shut}/")
            )
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert "cannot be reached" in detail
    assert not any(word in detail for word in INTERNALS), detail


def test_healthz_says_database_unavailable_without_the_driver_message() -> None:
    with closed_port() as shut:
        url = f"postgresql://crmcal:hunter2@127.0.0.1:{shut}/nothing"
        app = create_app(Settings(database_url=url, secret_key="k" * 43), background_jobs=False)
        with TestClient(app) as client:
            answer = client.get("/healthz")
    assert answer.status_code == 503
    assert answer.json() == {"status": "error", "detail": "database unavailable"}


def test_access_logs_drop_oauth_query_strings(db_url: str) -> None:
    create_app(Settings(database_url=db_url), background_jobs=False)
    logger = logging.getLogger("uvicorn.access")
    path = "/oauth/google/callback?code=4/secret-code&state=sealed-state"
    record = logger.makeRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", path, "1.1", 201), None,
    )  # fmt: skip
    assert logger.filter(record)
    line = record.getMessage()
    assert "secret-code" not in line
    assert "sealed-state" not in line
    assert "/oauth/google/callback" in line
    kept = logger.makeRecord("uvicorn.access", logging.INFO, __file__, 1, "%s %s %s",
                             ("c", "GET", "/api/v1/activities?limit=5"), None)  # fmt: skip
    assert logger.filter(kept)
    assert "limit=5" in kept.getMessage()


def test_api_tokens_are_listed_without_values_and_revoked_one_by_one(
    admin: Api, alice: Api, db_url: str
) -> None:
    second = admin.post(f"{V1}/users", json={"email": "two@crm.test", "name": "Two"})
    assert second.status_code == 201
    listed = alice.get(f"{V1}/me/tokens")
    assert listed.status_code == 200
    (only,) = listed.json()["items"]
    assert set(only) == {"id", "created_at"}
    assert alice.token not in listed.text
    bob = new_user(admin, "bob@crm.test")
    (bobs,) = bob.get(f"{V1}/me/tokens").json()["items"]
    assert alice.delete(f"{V1}/me/tokens/{bobs['id']}").status_code == 404
    assert bob.get(f"{V1}/me").status_code == 200
    # The token a request comes with is not revoked by it: the caller would be locked out.
    refused = alice.delete(f"{V1}/me/tokens/{only['id']}")
    assert refused.status_code == 409, refused.text
    assert alice.get(f"{V1}/me").status_code == 200
    other = Api(alice.client, run(issue_token_in(db_url, alice.id)), alice.id)
    assert other.delete(f"{V1}/me/tokens/{only['id']}").status_code == 204
    assert alice.get(f"{V1}/me").status_code == 401
    assert other.get(f"{V1}/me").status_code == 200


def test_contacts_need_their_permissions(admin: Api) -> None:
    person = admin.post(f"{V1}/persons", json={"name": "Pat", "email": "pat@acme.test"})
    assert person.status_code == 201, person.text
    viewer = new_user(admin, "viewer@crm.test", permissions=["contacts.view"])
    nobody = new_user(admin, "nobody@crm.test", permissions=[])
    bodies = {"persons": {"name": "X"}, "organizations": {"name": "X"}, "deals": {"title": "X"}}
    for kind, body in bodies.items():
        assert nobody.get(f"{V1}/{kind}").status_code == 403
        assert viewer.get(f"{V1}/{kind}").status_code == 200
        assert viewer.post(f"{V1}/{kind}", json=body).status_code == 403
        assert admin.post(f"{V1}/{kind}", json=body).status_code == 201
    pid = person.json()["id"]
    assert nobody.get(f"{V1}/persons/{pid}").status_code == 403
    assert viewer.get(f"{V1}/persons/{pid}").status_code == 200
    assert viewer.patch(f"{V1}/persons/{pid}", json={"name": "Y"}).status_code == 403
    default = new_user(admin, "default@crm.test")
    assert default.patch(f"{V1}/persons/{pid}", json={"name": "Y"}).status_code == 200
