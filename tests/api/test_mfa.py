"""Second factors with real ceremonies: TOTP codes from pyotp, WebAuthn from a software
authenticator (soft-webauthn 0.1.3 on fido2 0.9.3), recovery codes; the MFA policy."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pyotp

from tests.support.api import STRONG_PASSWORD, Env, Member, bearer, uid
from tests.support.authenticators import Passkey, TotpApp
from userorg.authn.models import TotpFactor


async def _login(env: Env, email: str, **extra: Any) -> Any:
    return await env.client.post(
        "/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD, **extra}
    )


async def _plain_member(env: Env, roles: list[str] | None = None) -> tuple[dict[str, Any], Member]:
    org = await env.create_org()
    member = await env.add_member(org["orgId"], roles or ["Developer"], mfa=False)
    return org, member


def _claims(env: Env, token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


async def test_totp_enrol_confirm_and_sign_in(env: Env) -> None:
    _org, member = await _plain_member(env)
    enrolled = await env.client.post("/v1/auth/mfa/totp/enroll", headers=member.headers)
    assert enrolled.status_code == 200
    body = enrolled.json()
    assert enrolled.headers["cache-control"] == "no-store"
    assert body["otpauthUri"].startswith("otpauth://totp/")
    assert f"secret={body['secret']}" in body["otpauthUri"]
    # The secret is stored encrypted, never in plaintext.
    async with env.container.session_factory() as session:
        factor = await session.get(TotpFactor, uuid.UUID(member.user_id))
        assert factor is not None and factor.status == "pending"
        assert body["secret"] not in factor.secret_encrypted
    app = TotpApp(body["secret"])
    wrong = await env.client.post(
        "/v1/auth/mfa/totp/confirm", json={"code": "000000"}, headers=member.headers
    )
    assert wrong.status_code == 400
    assert wrong.json()["code"] == "invalid_mfa_code"
    confirmed = await env.client.post(
        "/v1/auth/mfa/totp/confirm", json={"code": await app.code()}, headers=member.headers
    )
    assert confirmed.status_code == 200
    codes = confirmed.json()["recoveryCodes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    # A password alone no longer signs in: 401 mfa_required names the methods.
    challenge = await _login(env, member.email)
    assert challenge.status_code == 401
    error = challenge.json()
    assert error["code"] == "mfa_required"
    assert error["details"]["methods"] == ["totp", "recovery_code"]
    assert error["details"]["challenge"]
    code = await app.code()
    ok = await _login(env, member.email, totp=code)
    assert ok.status_code == 200, ok.text
    tokens = ok.json()
    assert tokens["mfaVerified"] is True
    claims = _claims(env, tokens["accessToken"])
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert abs(claims["mfa_time"] - time.time()) < 60
    # The same code is accepted once: replaying it fails and counts as a failure.
    replay = await _login(env, member.email, totp=code)
    assert replay.status_code == 401
    assert replay.json()["code"] == "invalid_second_factor"
    me = (await env.client.get("/v1/auth/me", headers=bearer(tokens["accessToken"]))).json()
    assert me["mfaVerified"] is True
    assert me["mfa"]["totp"] is True and me["mfa"]["recoveryCodesRemaining"] == 10
    assert await env.audit_count(action="auth:mfa:totp_confirm") >= 1


async def test_totp_drift_window_is_one_step(env: Env) -> None:
    _org, member = await _plain_member(env)
    app, _codes = await env.enrol_totp(member.token)
    totp = pyotp.TOTP(app.secret)
    now = time.time()
    too_old = totp.at(now - 90)
    too_new = totp.at(now + 90)
    for code in (too_old, too_new):
        response = await _login(env, member.email, totp=code)
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_second_factor"
    ahead = totp.at(now + 30)  # one step of drift is tolerated
    assert (await _login(env, member.email, totp=ahead)).status_code == 200


async def test_recovery_codes_sign_in_once_and_are_audited(env: Env) -> None:
    _org, member = await _plain_member(env)
    _app, codes = await env.enrol_totp(member.token)
    used = await _login(env, member.email, recoveryCode=codes[0])
    assert used.status_code == 200, used.text
    assert _claims(env, used.json()["accessToken"])["amr"] == ["pwd", "rec", "mfa"]
    again = await _login(env, member.email, recoveryCode=codes[0])
    assert again.status_code == 401
    events = await env.audit_count(action="auth:mfa:recovery_code_use", actor_id=member.user_id)
    assert events == 1
    # Regenerating needs an MFA session; the old codes stop working.
    pwd_only = await env.client.post("/v1/auth/mfa/recovery-codes", headers=member.headers)
    assert pwd_only.status_code == 403
    assert pwd_only.json()["code"] == "mfa_step_up_required"
    mfa_token = used.json()["accessToken"]
    fresh = await env.client.post("/v1/auth/mfa/recovery-codes", headers=bearer(mfa_token))
    assert fresh.status_code == 200
    new_codes = fresh.json()["recoveryCodes"]
    assert len(new_codes) == 10
    assert (await _login(env, member.email, recoveryCode=codes[1])).status_code == 401
    assert (await _login(env, member.email, recoveryCode=new_codes[0])).status_code == 200


async def test_totp_disable_needs_a_fresh_code(env: Env) -> None:
    _org, member = await _plain_member(env)
    app, _codes = await env.enrol_totp(member.token)
    missing = await env.client.request(
        "DELETE", "/v1/auth/mfa/totp", json={}, headers=member.headers
    )
    assert missing.status_code == 422
    wrong = await env.client.request(
        "DELETE", "/v1/auth/mfa/totp", json={"code": "123456"}, headers=member.headers
    )
    assert wrong.status_code == 400
    assert await env.audit_count(action="auth:mfa:totp_disable", outcome="denied") >= 1
    done = await env.client.request(
        "DELETE", "/v1/auth/mfa/totp", json={"code": await app.code()}, headers=member.headers
    )
    assert done.status_code == 204
    plain = await _login(env, member.email)
    assert plain.status_code == 200
    assert plain.json()["mfaVerified"] is False


async def _register_passkey(env: Env, token: str, passkey: Passkey, name: str = "yubikey") -> Any:
    options = await env.client.post("/v1/auth/mfa/webauthn/register/options", headers=bearer(token))
    assert options.status_code == 200, options.text
    credential = passkey.register(options.json())
    return await env.client.post(
        "/v1/auth/mfa/webauthn/register",
        json={"credential": credential, "name": name},
        headers=bearer(token),
    )


async def test_webauthn_register_login_and_manage(env: Env) -> None:
    _org, member = await _plain_member(env)
    passkey = Passkey()
    registered = await _register_passkey(env, member.token, passkey)
    assert registered.status_code == 201, registered.text
    body = registered.json()
    assert body["name"] == "yubikey"
    assert len(body["recoveryCodes"]) == 10  # the first factor
    challenge = await _login(env, member.email)
    assert challenge.status_code == 401
    details = challenge.json()["details"]
    assert details["methods"] == ["webauthn", "recovery_code"]
    options = details["webauthn"]
    assert options["rpId"] == "localhost"
    assert options["challenge"] == details["challenge"]
    assertion = passkey.sign(options)
    ok = await _login(env, member.email, webauthnAssertion=assertion)
    assert ok.status_code == 200, ok.text
    assert _claims(env, ok.json()["accessToken"])["amr"] == ["pwd", "hwk", "mfa"]
    mfa_headers = bearer(ok.json()["accessToken"])
    # The challenge is single use.
    assert (await _login(env, member.email, webauthnAssertion=assertion)).status_code == 401
    listed = (
        await env.client.get("/v1/auth/mfa/webauthn/credentials", headers=mfa_headers)
    ).json()["items"]
    assert [c["name"] for c in listed] == ["yubikey"]
    assert listed[0]["lastUsedAt"] is not None
    credential_id = listed[0]["credentialId"]
    renamed = await env.client.patch(
        f"/v1/auth/mfa/webauthn/credentials/{credential_id}",
        json={"name": "desk key"},
        headers=mfa_headers,
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "desk key"
    # Deleting needs a session signed in with a second factor.
    pwd_session = await env.client.delete(
        f"/v1/auth/mfa/webauthn/credentials/{credential_id}", headers=member.headers
    )
    assert pwd_session.status_code == 403
    deleted = await env.client.delete(
        f"/v1/auth/mfa/webauthn/credentials/{credential_id}", headers=mfa_headers
    )
    assert deleted.status_code == 204
    assert (await _login(env, member.email)).status_code == 200


async def test_webauthn_rejects_clones_forgeries_and_wrong_origins(env: Env) -> None:
    _org, member = await _plain_member(env)
    passkey = Passkey()
    assert (await _register_passkey(env, member.token, passkey)).status_code == 201

    async def options() -> dict[str, Any]:
        response = await _login(env, member.email)
        assert response.json()["code"] == "mfa_required", response.text
        result: dict[str, Any] = response.json()["details"]["webauthn"]
        return result

    assert (
        await _login(env, member.email, webauthnAssertion=passkey.sign(await options()))
    ).status_code == 200
    # Sign-count regression (a cloned authenticator) is refused and audited as suspicious.
    passkey.device.sign_count = 0
    cloned = await _login(env, member.email, webauthnAssertion=passkey.sign(await options()))
    assert cloned.status_code == 401
    assert cloned.json()["code"] == "invalid_second_factor"
    assert (
        await env.audit_count(action="auth:mfa:webauthn_clone_suspected", actor_id=member.user_id)
        == 1
    )
    passkey.device.sign_count = 10
    # A forged challenge (never issued) fails.
    forged = await options()
    forged["challenge"] = "A" * 43
    bad = await _login(env, member.email, webauthnAssertion=passkey.sign(forged))
    assert bad.status_code == 401
    # A wrong origin fails.
    phished = await _login(
        env,
        member.email,
        webauthnAssertion=passkey.sign(await options(), origin="https://evil.example"),
    )
    assert phished.status_code == 401
    # Malformed payloads are a clear 422 and count nothing.
    malformed = await _login(env, member.email, webauthnAssertion={"id": "x"})
    assert malformed.status_code == 422
    assert malformed.json()["code"] == "invalid_webauthn_assertion"
    await env.client.post(
        f"/v1/orgs/{member.org_id}/users/{member.user_id}/unlock",
        headers=await env.admin_headers(),
    )
    # Registration with a forged challenge or the wrong origin is refused too.
    other = Passkey()
    token = (
        await _login(env, member.email, webauthnAssertion=passkey.sign(await options()))
    ).json()["accessToken"]
    opts = (
        await env.client.post("/v1/auth/mfa/webauthn/register/options", headers=bearer(token))
    ).json()
    wrong_origin = other.register(opts, origin="https://evil.example")
    refused = await env.client.post(
        "/v1/auth/mfa/webauthn/register", json={"credential": wrong_origin}, headers=bearer(token)
    )
    assert refused.status_code == 400
    assert refused.json()["details"]["reason"] == "unexpected_origin"
    forged_opts = {**opts, "challenge": "B" * 43}
    refused = await env.client.post(
        "/v1/auth/mfa/webauthn/register",
        json={"credential": other.register(forged_opts)},
        headers=bearer(token),
    )
    assert refused.status_code == 400
    assert refused.json()["code"] == "invalid_webauthn_challenge"
    garbage = await env.client.post(
        "/v1/auth/mfa/webauthn/register", json={"credential": {"nope": 1}}, headers=bearer(token)
    )
    assert garbage.status_code == 422
    listed = (
        await env.client.get("/v1/auth/mfa/webauthn/credentials", headers=bearer(token))
    ).json()["items"]
    assert len(listed) == 1


async def test_mfa_policy_on_role_grants(env: Env) -> None:
    org = await env.create_org()
    admin = await env.admin_headers()
    member = await env.add_member(org["orgId"], ["Developer"], mfa=False)
    url = f"/v1/orgs/{org['orgId']}/users/{member.user_id}/roles"
    refused = await env.client.put(url, json={"roles": ["OrgOwner"]}, headers=admin)
    assert refused.status_code == 409
    assert refused.json()["code"] == "mfa_required_for_role"
    assert refused.json()["details"]["roles"] == ["OrgOwner"]
    # Orgs add roles to the policy.
    patched = await env.client.patch(
        f"/v1/orgs/{org['orgId']}", json={"mfaRequiredRoles": ["BillingAdmin"]}, headers=admin
    )
    assert patched.status_code == 200, patched.text
    refused = await env.client.put(url, json={"roles": ["BillingAdmin"]}, headers=admin)
    assert refused.status_code == 409
    await env.enrol_totp(member.token)
    granted = await env.client.put(url, json={"roles": ["OrgOwner"]}, headers=admin)
    assert granted.status_code == 200, granted.text
    assert granted.json()["roles"] == ["OrgOwner"]


async def test_invited_owner_holds_the_role_only_after_mfa(env: Env) -> None:
    """The invitee accepts; OrgOwner is held but not in force until they have enrolled a
    factor and signed in with it."""
    org = await env.create_org()
    email = f"owner-{uid()}@example.com"
    token = await env.invite(org["orgId"], email, ["OrgOwner"])
    accepted = await env.client.post(
        "/v1/invites/accept", json={"token": token, "password": STRONG_PASSWORD}
    )
    assert accepted.status_code == 200
    user_id = accepted.json()["userId"]
    pwd = await _login(env, email)
    assert pwd.status_code == 200
    headers = bearer(pwd.json()["accessToken"])
    me = (await env.client.get("/v1/auth/me", headers=headers)).json()
    membership = me["memberships"][0]
    assert membership["roles"] == ["OrgOwner"]
    assert membership["rolesAwaitingMfa"] == ["OrgOwner"]
    assert me["mfa"]["enrollmentRequired"] is True
    denied = await env.client.get(f"/v1/orgs/{org['orgId']}/users", headers=headers)
    assert denied.status_code == 403
    app, _codes = await env.enrol_totp(pwd.json()["accessToken"])
    # The enrolling session stays password-only: the role still does not count.
    assert (
        await env.client.get(f"/v1/orgs/{org['orgId']}/users", headers=headers)
    ).status_code == 403
    signed = await _login(env, email, totp=await app.code())
    assert signed.status_code == 200
    mfa_headers = bearer(signed.json()["accessToken"])
    allowed = await env.client.get(f"/v1/orgs/{org['orgId']}/users", headers=mfa_headers)
    assert allowed.status_code == 200
    me = (await env.client.get("/v1/auth/me", headers=mfa_headers)).json()
    assert me["memberships"][0]["rolesAwaitingMfa"] == []
    # Their last factor cannot be removed while they hold OrgOwner.
    last = await env.client.request(
        "DELETE", "/v1/auth/mfa/totp", json={"code": await app.code()}, headers=mfa_headers
    )
    assert last.status_code == 409
    assert last.json()["code"] == "mfa_required_by_role"
    assert user_id
