"""Test helpers that drive the service over HTTP, the way a client would."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.support.authenticators import TotpApp
from tests.support.receiver import WebhookReceiver
from userorg.audit.models import AuditEvent
from userorg.container import Container
from userorg.settings import Settings

STRONG_PASSWORD = "Correct-Horse-Battery-Staple-42"
# Roles that always need a second factor: members given them enrol TOTP in ``add_member``.
MFA_ROLES = frozenset({"OrgOwner"})


def uid() -> str:
    return uuid.uuid4().hex[:10]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Member:
    user_id: str
    email: str
    password: str
    token: str
    org_id: str
    totp: TotpApp | None = None
    recovery_codes: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


@dataclass
class Env:
    """One running service (one mode) and ways to talk to it."""

    mode: str
    app: FastAPI
    settings: Settings
    client: httpx.AsyncClient
    receiver: WebhookReceiver
    admin_email: str
    admin_password: str
    _admin_token: str | None = field(default=None)
    # Users who enrolled TOTP through these helpers: ``login`` answers the second step.
    totp_apps: dict[str, TotpApp] = field(default_factory=dict)

    @property
    def container(self) -> Container:
        container: Container = self.app.state.container
        return container

    async def login(self, email: str, password: str) -> str:
        body = {"email": email, "password": password}
        app = self.totp_apps.get(email.lower())
        if app is not None:
            # A fresh TOTP step when one is free, else a recovery code (no waiting).
            code = app.code_now()
            if code is None and app.recovery_codes:
                body["recoveryCode"] = app.recovery_codes.pop()
            else:
                body["totp"] = code or await app.code()
        response = await self.client.post("/v1/auth/login", json=body)
        assert response.status_code == 200, response.text
        token: str = response.json()["accessToken"]
        return token

    async def admin_headers(self) -> dict[str, str]:
        if self._admin_token is None:
            self._admin_token = await self.login(self.admin_email, self.admin_password)
        return bearer(self._admin_token)

    async def create_org(self, **overrides: Any) -> dict[str, Any]:
        slug = overrides.pop("slug", f"org-{uid()}")
        body = {
            "name": f"Org {slug}",
            "slug": slug,
            "billingOwnerEmail": f"billing@{slug}.example.com",
        }
        body.update(overrides)
        response = await self.client.post("/v1/orgs", json=body, headers=await self.admin_headers())
        assert response.status_code == 201, response.text
        org: dict[str, Any] = response.json()
        return org

    async def invite(
        self, org_id: str, email: str, roles: list[str], headers: dict[str, str] | None = None
    ) -> str:
        """Invite and return the token as the invitee receives it (through the webhook)."""
        response = await self.client.post(
            f"/v1/orgs/{org_id}/invites",
            json={"email": email, "roles": roles},
            headers=headers or await self.admin_headers(),
        )
        assert response.status_code == 202, response.text
        invite_id = response.json()["inviteId"]
        message = await self.receiver.wait_for(kind="invite", inviteId=invite_id)
        token: str = message["token"]
        return token

    async def add_member(
        self, org_id: str, roles: list[str], email: str | None = None, *, mfa: bool | None = None
    ) -> Member:
        """Invite, accept, sign in. Members given a role that requires MFA (or ``mfa=True``)
        enrol TOTP first and sign in with it, as a real invitee must for the role to count."""
        email = email or f"user-{uid()}@example.com"
        token = await self.invite(org_id, email, roles)
        response = await self.client.post(
            "/v1/invites/accept",
            json={"token": token, "password": STRONG_PASSWORD, "displayName": "Test User"},
        )
        assert response.status_code == 200, response.text
        user_id = response.json()["userId"]
        access = await self.login(email, STRONG_PASSWORD)
        member = Member(user_id, email, STRONG_PASSWORD, access, org_id)
        if mfa or (mfa is None and MFA_ROLES & set(roles)):
            member.totp, member.recovery_codes = await self.enrol_totp(access)
            self.totp_apps[email.lower()] = member.totp
            member.token = await self.login(email, STRONG_PASSWORD)
        return member

    async def enrol_totp(self, access_token: str) -> tuple[TotpApp, list[str]]:
        enrolled = await self.client.post("/v1/auth/mfa/totp/enroll", headers=bearer(access_token))
        assert enrolled.status_code == 200, enrolled.text
        app = TotpApp(enrolled.json()["secret"])
        confirmed = await self.client.post(
            "/v1/auth/mfa/totp/confirm",
            json={"code": await app.code()},
            headers=bearer(access_token),
        )
        assert confirmed.status_code == 200, confirmed.text
        codes: list[str] = confirmed.json()["recoveryCodes"]
        app.recovery_codes = list(codes[5:])  # half for the helpers, half for the test
        return app, codes[:5]

    async def audit_count(self, **filters: Any) -> int:
        async with self.container.session_factory() as session:
            query = select(func.count()).select_from(AuditEvent)
            for key, value in filters.items():
                query = query.where(getattr(AuditEvent, key) == value)
            return int((await session.execute(query)).scalar_one())

    async def audit_events(self, org_id: str, **params: Any) -> list[dict[str, Any]]:
        response = await self.client.get(
            f"/v1/orgs/{org_id}/audit-events", params=params, headers=await self.admin_headers()
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items
