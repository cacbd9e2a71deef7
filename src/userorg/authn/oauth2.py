"""OAuth2 for machines: client credentials (RFC 6749 §4.4), introspection (RFC 7662) and
revocation (RFC 7009), on Authlib's server components.

Authlib's server is synchronous; our storage is async. Each request therefore loads what the
protocol will ask for (the client named by the request, the presented token) *before* running
Authlib, hands it over through a context variable, and persists what Authlib produced (issued
or revoked tokens, audit events) afterwards. Authlib does the protocol: client
authentication (``client_secret_basic`` / ``client_secret_post``), grant and parameter
validation, scope checks, error codes and response headers.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import re
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    InvalidScopeError,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from userorg.audit import recorder as audit
from userorg.authn.models import OAuthClient, RevokedToken, Session
from userorg.authn.principal import Principal
from userorg.authn.tokens import InvalidToken, TokenService
from userorg.authz.catalogue import ORG_SCOPES
from userorg.context import ANONYMOUS, Actor
from userorg.crypto import constant_time_equals, random_token, sha256_hex
from userorg.db import UnitOfWork, utcnow
from userorg.errors import Unauthenticated
from userorg.orgs.models import Organization
from userorg.roles import service as roles_service
from userorg.serviceaccounts.models import ServiceAccount
from userorg.users.models import Membership, User

CLIENT_SECRET_PREFIX = "uocs"
CLIENT_ID_PREFIX = "uoc_"
CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


_CLIENT_ID_SHAPE = re.compile(re.escape(CLIENT_ID_PREFIX) + r"[0-9a-f]{32}")


def client_id_for(service_account_id: uuid.UUID) -> str:
    return CLIENT_ID_PREFIX + service_account_id.hex


# -- client secrets (the service-account API) -----------------------------------------------
async def issue_client_secret(
    uow: UnitOfWork,
    *,
    actor: Actor,
    org: Organization,
    account: ServiceAccount,
    grace_period_seconds: int = 0,
) -> tuple[OAuthClient, str]:
    """Issue the first secret or rotate it. The new secret is returned once; only its
    SHA-256 is stored. After a rotation the previous secret keeps working for
    ``grace_period_seconds`` (0: it stops at once)."""
    secret = random_token(CLIENT_SECRET_PREFIX)
    now = utcnow()
    client = (
        await uow.session.execute(
            select(OAuthClient).where(OAuthClient.service_account_id == account.id)
        )
    ).scalar_one_or_none()
    rotated = client is not None
    if client is None:
        client = OAuthClient(
            client_id=client_id_for(account.id),
            service_account_id=account.id,
            org_id=org.id,
            secret_hash=sha256_hex(secret),
            created_at=now,
            rotated_at=now,
        )
        uow.session.add(client)
    else:
        if grace_period_seconds > 0:
            client.previous_secret_hash = client.secret_hash
            client.previous_secret_expires_at = now + dt.timedelta(seconds=grace_period_seconds)
        else:
            client.previous_secret_hash = None
            client.previous_secret_expires_at = None
        client.secret_hash = sha256_hex(secret)
        client.rotated_at = now
    await uow.session.flush()
    await audit.record(
        uow.session,
        action=f"api:service_account:client_secret_{'rotate' if rotated else 'issue'}",
        actor=actor,
        org_id=org.id,
        target_type="service_account",
        target_id=account.id,
        metadata={"clientId": client.client_id, "gracePeriodSeconds": grace_period_seconds},
    )
    return client, secret


async def revoke_client_tokens(
    session: AsyncSession,
    *,
    service_account_id: uuid.UUID | None = None,
    org_id: uuid.UUID | None = None,
) -> None:
    """Every token issued so far to these clients stops working (disable, delete, org
    suspension); tokens issued afterwards work again once the account or org is active."""
    query = update(OAuthClient).values(token_generation=OAuthClient.token_generation + 1)
    if service_account_id is not None:
        query = query.where(OAuthClient.service_account_id == service_account_id)
    elif org_id is not None:
        query = query.where(OAuthClient.org_id == org_id)
    else:
        raise ValueError("name a service account or an org")
    await session.execute(query.execution_options(synchronize_session=False))


# -- bearer authentication of client-credentials tokens ------------------------------------
@dataclass(frozen=True, slots=True)
class MachineTokenState:
    active: bool
    reason: str | None
    account: ServiceAccount | None = None


async def machine_token_state(
    session: AsyncSession, claims: Mapping[str, Any]
) -> MachineTokenState:
    try:
        account_id = uuid.UUID(str(claims["sub"]))
        client_id = str(claims["client_id"])
        jti = str(claims["jti"])
        generation = int(claims["gen"])
    except (KeyError, ValueError, TypeError):
        return MachineTokenState(False, "malformed")
    row = (
        await session.execute(
            select(ServiceAccount, Organization.status, OAuthClient.token_generation)
            .join(Organization, Organization.id == ServiceAccount.org_id)
            .join(OAuthClient, OAuthClient.service_account_id == ServiceAccount.id)
            .where(ServiceAccount.id == account_id, OAuthClient.client_id == client_id)
        )
    ).first()
    if row is None:
        return MachineTokenState(False, "unknown_client")
    account, org_status, current_generation = row
    if account.deleted_at is not None or account.status != "active":
        return MachineTokenState(False, "principal_suspended", account)
    if org_status != "active":
        return MachineTokenState(False, f"org_{org_status}", account)
    if generation != current_generation:
        return MachineTokenState(False, "token_revoked", account)
    revoked = (
        await session.execute(select(RevokedToken.jti).where(RevokedToken.jti == jti))
    ).first()
    if revoked is not None:
        return MachineTokenState(False, "token_revoked", account)
    return MachineTokenState(True, None, account)


async def client_token_principal(session: AsyncSession, claims: Mapping[str, Any]) -> Principal:
    state = await machine_token_state(session, claims)
    if not state.active or state.account is None:
        if state.reason in {"principal_suspended"} or (state.reason or "").startswith("org_"):
            raise Unauthenticated(
                "The service account or its organization is not active",
                code="principal_suspended",
            )
        raise Unauthenticated(
            "The access token is not valid",
            code="invalid_token",
            details={"reason": state.reason or "invalid"},
        )
    scope = claims.get("scope")
    return Principal(
        id=state.account.id,
        type="service_account",
        status=state.account.status,
        home_org_id=state.account.org_id,
        credential_scopes=frozenset(scope_to_list(scope) or ())
        if isinstance(scope, str)
        else frozenset(),
    )


# -- the Authlib server ---------------------------------------------------------------------
class Client(ClientMixin):  # type: ignore[misc]
    """An OAuth2 client as Authlib sees it: one service account, confidential."""

    def __init__(self, record: OAuthClient, *, account: ServiceAccount, granted: frozenset[str]):
        self.record = record
        self.account = account
        self.granted = granted
        self.client_id = record.client_id

    def get_client_id(self) -> str:
        return self.record.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        """The intersection of the requested scopes and those the account's roles grant
        (all granted ones when none are requested)."""
        if not scope:
            return " ".join(sorted(self.granted))
        return " ".join(sorted(set(scope_to_list(scope) or ()) & self.granted))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        presented = sha256_hex(client_secret)
        if constant_time_equals(presented, self.record.secret_hash):
            return True
        previous = self.record.previous_secret_hash
        expires = self.record.previous_secret_expires_at
        return bool(
            previous
            and expires
            and expires > utcnow()
            and hmac.compare_digest(presented.encode(), previous.encode())
        )

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in CLIENT_AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


@dataclass
class PresentedToken:
    """A token presented to introspection or revocation, with its live state."""

    claims: dict[str, Any]
    active: bool
    client_id: str | None  # machine tokens: the client it was issued to
    org_id: uuid.UUID | None  # machine tokens: the account's org
    member_orgs: frozenset[uuid.UUID] = frozenset()  # user tokens: orgs of active membership

    def is_expired(self) -> bool:
        return float(self.claims.get("exp", 0)) <= utcnow().timestamp()

    def is_revoked(self) -> bool:
        return not self.active

    def check_client(self, client: Client) -> bool:
        return self.client_id is not None and self.client_id == client.client_id

    def get_expires_at(self) -> int:
        return int(self.claims.get("exp", 0))


@dataclass
class Exchange:
    """What one request preloaded for Authlib, and what Authlib produced."""

    client: Client | None = None
    token: PresentedToken | None = None
    issued: list[dict[str, Any]] = field(default_factory=list)
    revoked: list[PresentedToken] = field(default_factory=list)


_exchange: ContextVar[Exchange | None] = ContextVar("userorg_oauth2_exchange", default=None)


def _current() -> Exchange:
    exchange = _exchange.get()
    if exchange is None:
        raise RuntimeError("no OAuth2 exchange in progress")
    return exchange


class _ClientCredentialsGrant(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS


class FormRequest(OAuth2Request):  # type: ignore[misc]
    """A form-encoded POST as Authlib's endpoints read it."""

    def __init__(self, uri: str, form: dict[str, str], headers: Mapping[str, str]) -> None:
        super().__init__(method="POST", uri=uri, headers=headers)
        self._form = form
        self.payload = BasicOAuth2Payload(form)

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _IntrospectionEndpoint(IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> PresentedToken | None:
        return _current().token

    def check_permission(self, token: PresentedToken, client: Client, request: Any) -> bool:
        """A client sees tokens of its own org: its org's machine tokens, and user tokens of
        active members of its org."""
        org_id = client.account.org_id
        return token.org_id == org_id or org_id in token.member_orgs

    def introspect_token(self, token: PresentedToken) -> dict[str, Any]:
        claims = token.claims
        payload: dict[str, Any] = {
            "active": True,
            "token_type": "Bearer",
            "sub": claims.get("sub"),
            "iss": claims.get("iss"),
            "exp": claims.get("exp"),
            "iat": claims.get("iat"),
            "nbf": claims.get("nbf"),
            "jti": claims.get("jti"),
            "principal_type": claims.get("ptype"),
        }
        if claims.get("ptype") == "service_account":
            payload.update(
                client_id=claims.get("client_id"),
                scope=claims.get("scope"),
                org_id=claims.get("org"),
            )
        else:
            payload.update(sid=claims.get("sid"), amr=claims.get("amr"))
            if "mfa_time" in claims:
                payload["mfa_time"] = claims["mfa_time"]
        return {k: v for k, v in payload.items() if v is not None}


class _RevocationEndpoint(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS
    SUPPORTED_TOKEN_TYPES = ("access_token", "refresh_token")

    def query_token(self, token_string: str, token_type_hint: str | None) -> PresentedToken | None:
        token = _current().token
        # Clients revoke the machine tokens issued to them; anything else is unknown here.
        if token is None or token.client_id is None:
            return None
        return token

    def revoke_token(self, token: PresentedToken, request: Any) -> None:
        _current().revoked.append(token)


class _Server(AuthorizationServer):  # type: ignore[misc]
    def query_client(self, client_id: str) -> Client | None:
        client = _current().client
        if client is not None and client.client_id == client_id:
            return client
        return None

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        _current().issued.append(token)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        assert isinstance(request, OAuth2Request)
        return request

    def handle_response(
        self, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, headers


@dataclass(frozen=True, slots=True)
class OAuth2Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class OAuth2Service:
    def __init__(self, *, tokens: TokenService, token_ttl_seconds: int) -> None:
        self._tokens = tokens
        self._ttl = token_ttl_seconds
        self._server = _Server(scopes_supported=sorted(ORG_SCOPES))
        self._server.register_grant(_ClientCredentialsGrant)
        self._server.register_token_generator("client_credentials", self._generate)
        self._server.register_endpoint(_IntrospectionEndpoint)
        self._server.register_endpoint(_RevocationEndpoint)

    def _generate(
        self,
        grant_type: str,
        client: Client,
        user: Any = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = False,
    ) -> dict[str, Any]:
        allowed = client.get_allowed_scope(scope)
        if not allowed:
            raise InvalidScopeError(description="None of the requested scopes is granted")
        token, _expires = self._tokens.sign_access_token(
            subject=client.account.id,
            principal_type="service_account",
            session_id=None,
            amr=[],
            extra={
                "client_id": client.client_id,
                "org": str(client.account.org_id),
                "scope": allowed,
                "gen": client.record.token_generation,
            },
            ttl_seconds=self._ttl,
        )
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self._ttl,
            "scope": allowed,
        }

    # -- the three endpoints --------------------------------------------------------------
    async def token(
        self, uow: UnitOfWork, *, form: dict[str, str], headers: Mapping[str, str], uri: str
    ) -> OAuth2Response:
        exchange = Exchange(client=await _load_client(uow.session, form=form, headers=headers))
        await self._tokens.prepare()
        status, body, response_headers = self._run(
            exchange,
            self._server.create_token_response,
            form,
            headers,
            uri,
        )
        client = exchange.client
        if status == 200 and exchange.issued and client is not None:
            issued = exchange.issued[0]
            claims = self._tokens.unverified_claims(issued["access_token"])
            await audit.record(
                uow.session,
                action="oauth2:token:issue",
                actor=Actor(type="service_account", id=str(client.account.id)),
                org_id=client.account.org_id,
                target_type="access_token",
                target_id=claims.get("jti"),
                metadata={"clientId": client.client_id, "scope": issued.get("scope")},
            )
        else:
            await _audit_denial(
                uow, client=client, form=form, body=body, action="oauth2:token:deny"
            )
        return OAuth2Response(status, body, response_headers)

    async def introspect(
        self, uow: UnitOfWork, *, form: dict[str, str], headers: Mapping[str, str], uri: str
    ) -> OAuth2Response:
        client = await _load_client(uow.session, form=form, headers=headers)
        token = await self._load_token(uow.session, form.get("token"))
        exchange = Exchange(client=client, token=token)
        status, body, response_headers = self._run(
            exchange,
            lambda request: self._server.create_endpoint_response("introspection", request),
            form,
            headers,
            uri,
        )
        if status != 200:
            await _audit_denial(
                uow, client=client, form=form, body=body, action="oauth2:introspect:deny"
            )
        return OAuth2Response(status, body, response_headers)

    async def revoke(
        self, uow: UnitOfWork, *, form: dict[str, str], headers: Mapping[str, str], uri: str
    ) -> OAuth2Response:
        client = await _load_client(uow.session, form=form, headers=headers)
        token = await self._load_token(uow.session, form.get("token"))
        exchange = Exchange(client=client, token=token)
        status, body, response_headers = self._run(
            exchange,
            lambda request: self._server.create_endpoint_response("revocation", request),
            form,
            headers,
            uri,
        )
        if status == 200 and client is not None:
            for revoked in exchange.revoked:
                await _store_revocation(uow.session, revoked, reason="revoked_by_client")
                await audit.record(
                    uow.session,
                    action="oauth2:token:revoke",
                    actor=Actor(type="service_account", id=str(client.account.id)),
                    org_id=client.account.org_id,
                    target_type="access_token",
                    target_id=revoked.claims.get("jti"),
                    metadata={"clientId": client.client_id},
                )
        elif status != 200:
            await _audit_denial(
                uow, client=client, form=form, body=body, action="oauth2:revoke:deny"
            )
        return OAuth2Response(status, body, response_headers)

    def _run(
        self,
        exchange: Exchange,
        call: Any,
        form: dict[str, str],
        headers: Mapping[str, str],
        uri: str,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        marker = _exchange.set(exchange)
        try:
            request = FormRequest(uri, form, headers)
            status, body, response_headers = call(request)
        finally:
            _exchange.reset(marker)
        return int(status), dict(body or {}), dict(response_headers)

    async def _load_token(self, session: AsyncSession, raw: str | None) -> PresentedToken | None:
        if not raw or len(raw) > 4096:
            return None
        try:
            claims = await self._tokens.verify_access_token(raw)
        except InvalidToken:
            return None
        if claims.get("ptype") == "service_account":
            state = await machine_token_state(session, claims)
            org = state.account.org_id if state.account is not None else None
            return PresentedToken(claims, state.active, str(claims.get("client_id")), org)
        if claims.get("ptype") == "user":
            return await _user_token(session, claims)
        return None


async def _user_token(session: AsyncSession, claims: dict[str, Any]) -> PresentedToken | None:
    try:
        session_id = uuid.UUID(str(claims["sid"]))
        user_id = uuid.UUID(str(claims["sub"]))
    except (KeyError, ValueError):
        return None
    row = (
        await session.execute(
            select(Session.status, Session.expires_at, User.status)
            .join(User, User.id == Session.user_id)
            .where(Session.id == session_id, Session.user_id == user_id)
        )
    ).first()
    active = row is not None and row[0] == "active" and row[1] > utcnow() and row[2] == "active"
    orgs = (
        await session.execute(
            select(Membership.org_id).where(
                Membership.user_id == user_id, Membership.status == "active"
            )
        )
    ).scalars()
    return PresentedToken(claims, active, None, None, frozenset(orgs))


def _presented_client_id(form: Mapping[str, str], headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization") or ""
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        client_id, sep, _secret = decoded.partition(":")
        return unquote(client_id) if sep else None
    return form.get("client_id") or None


async def _load_client(
    session: AsyncSession, *, form: Mapping[str, str], headers: Mapping[str, str]
) -> Client | None:
    """The client the request names, if it may use OAuth2 at all (active account, active
    org). Authentication itself (the secret) is Authlib's job."""
    client_id = _presented_client_id(form, headers)
    if not client_id or not _CLIENT_ID_SHAPE.fullmatch(client_id):
        # Only ids this service issues reach the database (a NUL byte, say, is a 500 there).
        return None
    row = (
        await session.execute(
            select(OAuthClient, ServiceAccount, Organization)
            .join(ServiceAccount, ServiceAccount.id == OAuthClient.service_account_id)
            .join(Organization, Organization.id == ServiceAccount.org_id)
            .where(OAuthClient.client_id == client_id)
        )
    ).first()
    if row is None:
        return None
    record, account, org = row
    if account.deleted_at is not None or account.status != "active" or org.status != "active":
        return None
    roles = await roles_service.roles_of(
        session, org_id=org.id, principal_type="service_account", principal_id=account.id
    )
    granted = await roles_service.scopes_of_roles(session, org_id=org.id, roles=roles)
    return Client(record, account=account, granted=granted)


async def _audit_denial(
    uow: UnitOfWork,
    *,
    client: Client | None,
    form: Mapping[str, str],
    body: dict[str, Any],
    action: str,
) -> None:
    error = str(body.get("error") or "invalid_request")
    await audit.record(
        uow.session,
        action=action,
        actor=Actor(type="service_account", id=str(client.account.id)) if client else ANONYMOUS,
        org_id=client.account.org_id if client else None,
        outcome="denied",
        reason=error,
        target_type="oauth_client",
        target_id=(client.client_id if client else None),
        metadata={"grantType": form.get("grant_type")} if "grant_type" in form else {},
    )


async def _store_revocation(session: AsyncSession, token: PresentedToken, *, reason: str) -> None:
    jti = str(token.claims.get("jti"))
    expires = dt.datetime.fromtimestamp(token.get_expires_at(), dt.UTC)
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    await session.execute(
        insert(RevokedToken)
        .values(jti=jti, expires_at=expires, revoked_at=utcnow(), reason=reason)
        .on_conflict_do_nothing(index_elements=["jti"])
    )
