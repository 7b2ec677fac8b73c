"""Login, tokens, TOTP, rate limits, settings safety, CORS."""

from __future__ import annotations

import socket
import time

import pyotp
import pytest
from alembic import command
from pydantic import ValidationError

from control_api.config import ApiSettings
from tests.support.api_client import api_client
from tests.support.control_api import PASSWORD, create_user, log_in
from tests.support.fleet import create_tenant, unique
from tests.support.services import alembic_config, empty_database, migrate, wait_for

pytestmark = pytest.mark.integration


def login(api, email, password):
    return api.post("/auth/login", json={"email": email, "password": password})


def test_login_with_json_and_with_the_oauth2_form(api, database):
    user = create_user(database, "admin", None)
    by_json = api.post("/auth/login", json={"email": user.email, "password": PASSWORD})
    by_form = api.post("/auth/login", data={"username": user.email, "password": PASSWORD})
    for response in (by_json, by_form):
        assert response.status_code == 200
        assert response.json()["token_type"] == "bearer"
        me = api.get(
            "/auth/me", headers={"Authorization": f"Bearer {response.json()['access_token']}"}
        )
        assert me.json() == {**me.json(), "email": user.email, "role": "admin", "tenant_id": None}


def test_wrong_password_unknown_account_and_bad_tokens_are_401(api, database):
    user = create_user(database, "admin", None)
    assert (
        api.post("/auth/login", json={"email": user.email, "password": "nope"}).status_code == 401
    )
    assert (
        api.post("/auth/login", json={"email": "who@example.com", "password": "x"}).status_code
        == 401
    )
    assert api.get("/auth/me").status_code == 401
    assert api.get("/auth/me", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 401


def test_a_disabled_account_loses_access_at_once(api, actors):
    assert api.get("/nodes", headers=actors.viewer_a.headers).status_code == 200
    response = api.patch(
        f"/users/{actors.viewer_a.id}", json={"disabled": True}, headers=actors.admin.headers
    )
    assert response.status_code == 200
    assert api.get("/nodes", headers=actors.viewer_a.headers).status_code == 401


def test_failed_logins_are_rate_limited_per_account(database, broker):
    with api_client(database, broker, login_limit_per_account="3/minute") as api:
        user = create_user(database, "admin", None)
        codes = [
            api.post("/auth/login", json={"email": user.email, "password": "wrong"}).status_code
            for _ in range(4)
        ]
        assert codes == [401, 401, 401, 429]
        # Even the right password waits until the window has passed.
        blocked = api.post("/auth/login", json={"email": user.email, "password": PASSWORD})
        assert blocked.status_code == 429
        assert int(blocked.headers["Retry-After"]) >= 1
        other = create_user(database, "admin", None)
        assert (
            api.post("/auth/login", json={"email": other.email, "password": PASSWORD}).status_code
            == 200
        )


def test_failed_logins_are_rate_limited_per_address(database, broker):
    with api_client(database, broker, login_limit_per_address="4/minute") as api:
        users = [create_user(database, "admin", None) for _ in range(5)]
        codes = [
            api.post("/auth/login", json={"email": u.email, "password": "wrong"}).status_code
            for u in users
        ]
        assert codes == [401, 401, 401, 401, 429]


def test_totp_setup_then_required_at_login(api, database):
    user = log_in(api, create_user(database, "admin", None))
    setup = api.post("/auth/totp", json={"password": PASSWORD}, headers=user.headers).json()
    assert setup["otpauth_uri"].startswith("otpauth://totp/wattfleet:")
    totp = pyotp.TOTP(setup["secret"])
    wrong = f"{(int(totp.now()) + 500_000) % 1_000_000:06d}"
    assert (
        api.post("/auth/totp/confirm", json={"code": wrong}, headers=user.headers).status_code
        == 400
    )
    assert (
        api.post("/auth/totp/confirm", json={"code": totp.now()}, headers=user.headers).status_code
        == 204
    )
    without = api.post("/auth/login", json={"email": user.email, "password": PASSWORD})
    assert without.status_code == 401
    assert "TOTP" in without.json()["detail"]
    # The confirming code is used up: the next step's is within the window.
    with_code = login_with_code(api, user, totp.at(time.time() + 30))
    assert with_code.status_code == 200


def test_admins_without_totp_are_refused_when_settings_require_it(database, broker):
    with api_client(database, broker, require_admin_totp=True) as api:
        admin = create_user(database, "admin", None)
        refused = api.post("/auth/login", json={"email": admin.email, "password": PASSWORD})
        assert refused.status_code == 401
        assert "create-admin --totp" in refused.json()["detail"]


def test_example_secrets_refuse_to_start_outside_dev():
    with pytest.raises(ValidationError, match="WATTFLEET_JWT_SECRET"):
        ApiSettings(env="prod", mqtt_password="a-real-broker-password")
    with pytest.raises(ValidationError, match="WATTFLEET_MQTT_PASSWORD"):
        ApiSettings(env="prod", jwt_secret="a-real-signing-key")
    ApiSettings(env="prod", jwt_secret="a-real-signing-key", mqtt_password="a-real-password")


def test_cors_answers_only_allowed_origins(database, broker):
    with api_client(database, broker, cors_origins=["https://ops.example.com"]) as api:
        preflight = {"Access-Control-Request-Method": "GET"}
        allowed = api.options("/nodes", headers={"Origin": "https://ops.example.com", **preflight})
        other = api.options("/nodes", headers={"Origin": "https://evil.example.com", **preflight})
        assert allowed.headers["access-control-allow-origin"] == "https://ops.example.com"
        assert "access-control-allow-origin" not in other.headers


def test_a_respelled_email_is_the_same_account_for_the_login_limit(database, broker):
    """Python's and PostgreSQL's lower() disagree on U+0130: the limit counted one
    spelling while the lookup found the account under another."""
    with api_client(database, broker, login_limit_per_account="3/minute") as api:
        admin = log_in(api, create_user(database, "admin", None))
        local = unique("ivan")
        body = {"email": f"{local}@example.com", "password": PASSWORD, "role": "admin"}
        assert api.post("/users", json=body, headers=admin.headers).status_code == 201
        shouted = f"{local.upper()}@EXAMPLE.com"
        assert [login(api, shouted, "wrong").status_code for _ in range(3)] == [401] * 3
        assert login(api, body["email"], PASSWORD).status_code == 429
        dotted = f"\u0130{local[1:]}@example.com"  # "İvan-...": not the same letters
        assert login(api, dotted, PASSWORD).status_code == 401


def test_emails_are_stored_and_matched_in_one_normal_form(api, actors, database):
    local = unique("Mixed.Case")
    body = {"email": f"{local}@Example.COM", "password": PASSWORD, "role": "admin"}
    created = api.post("/users", json=body, headers=actors.admin.headers)
    assert created.status_code == 201, created.text
    assert created.json()["email"] == f"{local.lower()}@example.com"
    again = {**body, "email": f"{local.upper()}@example.com"}
    assert api.post("/users", json=again, headers=actors.admin.headers).status_code == 409
    assert login(api, f"{local.upper()}@EXAMPLE.COM", PASSWORD).status_code == 200
    invalid = api.post("/auth/login", json={"email": "not an address", "password": "x"})
    assert invalid.status_code == 422


def test_the_migration_folds_existing_addresses():
    with empty_database("email-folding") as db:
        command.upgrade(alembic_config(db), "0005")
        with db.connect() as conn:
            conn.execute(
                "INSERT INTO users (email, password_hash, role)"
                " VALUES ('First.Admin@example.com', 'x', 'admin')"
            )
        migrate(db)
        with db.connect() as conn:
            emails = [r[0] for r in conn.execute("SELECT email FROM users")]
        assert emails == ["first.admin@example.com"]


def with_totp(api, user):
    """Sets up and confirms TOTP for a logged-in user; its authenticator, and the time
    its confirming code was made (that step is used)."""
    setup = api.post("/auth/totp", json={"password": PASSWORD}, headers=user.headers).json()
    totp = pyotp.TOTP(setup["secret"])
    now_s = time.time()
    confirmed = api.post("/auth/totp/confirm", json={"code": totp.at(now_s)}, headers=user.headers)
    assert confirmed.status_code == 204, confirmed.text
    return totp, now_s


def login_with_code(api, user, code):
    body = {"email": user.email, "password": PASSWORD, "totp_code": code}
    return api.post("/auth/login", json=body)


def test_a_totp_code_logs_in_once(api, database):
    user = log_in(api, create_user(database, "operator", create_tenant(database)))
    totp, now_s = with_totp(api, user)
    # The confirming code is used; the next step's code is within the window.
    assert login_with_code(api, user, totp.at(now_s)).status_code == 401
    next_code = totp.at(now_s + 30)
    assert login_with_code(api, user, next_code).status_code == 200
    replayed = login_with_code(api, user, next_code)
    assert replayed.status_code == 401
    assert "works once" in replayed.json()["detail"]


def test_turning_totp_off_needs_the_password_and_a_current_code(database, broker):
    with api_client(database, broker, login_limit_per_account="4/minute") as api:
        user = log_in(api, create_user(database, "operator", create_tenant(database)))
        totp, now_s = with_totp(api, user)

        def reset(**body):
            return api.post("/auth/totp", json=body, headers=user.headers)

        assert api.post("/auth/totp", headers=user.headers).status_code == 422
        assert reset(password=PASSWORD).status_code == 401
        assert reset(password="wrong", code=totp.at(now_s + 30)).status_code == 401
        # TOTP is still on: a login needs a code.
        assert login(api, user.email, PASSWORD).status_code == 401
        assert reset(password=PASSWORD, code=totp.at(now_s + 30)).status_code == 200
        assert login(api, user.email, PASSWORD).status_code == 200
        # Guessing the password through this route is limited like a login.
        assert [reset(password="wrong").status_code for _ in range(2)] == [401, 429]


@pytest.mark.parametrize(
    "changes",
    [[{"password": "a brand new password"}], [{"disabled": True}, {"disabled": False}]],
    ids=["new password", "disabled and enabled"],
)
def test_tokens_issued_before_a_password_change_or_a_disable_stop_working(
    api, actors, database, changes
):
    user = log_in(api, create_user(database, "operator", actors.tenant_a))
    stolen = dict(user.headers)
    assert api.get("/auth/me", headers=stolen).status_code == 200
    for change in changes:
        patched = api.patch(f"/users/{user.id}", json=change, headers=actors.admin.headers)
        assert patched.status_code == 200, patched.text
    assert api.get("/auth/me", headers=stolen).status_code == 401
    password = changes[0].get("password", PASSWORD)
    fresh = login(api, user.email, password)
    assert fresh.status_code == 200
    headers = {"Authorization": f"Bearer {fresh.json()['access_token']}"}
    assert api.get("/auth/me", headers=headers).status_code == 200


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "application/json"])
def test_a_client_gone_before_its_login_body_arrived_is_no_server_error(api_process, content_type):
    """It answered 500 (a ClientDisconnect traceback, an audit row with outcome error)."""
    with socket.create_connection(("127.0.0.1", api_process.port), timeout=10) as conn:
        conn.sendall(
            b"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Content-Type: {content_type}\r\nContent-Length: 1000\r\n\r\n".encode()
            + b"username=a"
        )
    route = 'wattfleet_api_requests_total{method="POST",route="/auth/login"'

    def counted() -> str | None:
        text = api_process.client().get("/metrics").text
        return text if route in text else None

    text = wait_for(counted, 10, "the login request counted")
    assert route + ',status="400"} 1.0' in text
    assert route + ',status="500"}' not in text
