"""Secrets never reach the audit trail or the stream. Generated from the route table: every
mutation endpoint is fed secret-looking canaries, and every secret the service hands out is
collected; none may appear in stored events, on the Kafka topic or in the JSONL stream."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from typing import Any

import orjson
from sqlalchemy import select

from tests.support.api import STRONG_PASSWORD, Env, uid
from tests.support.audit import stream_documents, wait_outbox_empty
from tests.support.routes import operations
from userorg.audit.models import AuditEvent
from userorg.audit.redaction import is_sensitive_key

MUTATIONS = {"POST", "PUT", "PATCH", "DELETE"}


def canary() -> str:
    # Shaped like a strong password so that password fields accept it.
    return f"Canary-{secrets.token_hex(10)}-Zq9"


class Generator:
    """Builds a plausible body from the OpenAPI schema; secret-like fields get canaries."""

    def __init__(self, document: dict[str, Any], org_id: str, planted: set[str]) -> None:
        self.components = document["components"]["schemas"]
        self.org_id = org_id
        self.planted = planted

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in schema:
            return self.components[schema["$ref"].split("/")[-1]]
        if "anyOf" in schema:
            options = [s for s in schema["anyOf"] if s.get("type") != "null"]
            return self._resolve(options[0]) if options else {"type": "null"}
        return schema

    def value(self, name: str, schema: dict[str, Any]) -> Any:
        schema = self._resolve(schema)
        lowered = name.lower()
        if lowered == "currentpassword":  # the caller's own (members sign up with it)
            return STRONG_PASSWORD
        if is_sensitive_key(name) and schema.get("type") in {"string", None}:
            secret = canary()
            self.planted.add(secret)
            return secret
        if "enum" in schema:
            return schema["enum"][0]
        kind = schema.get("type")
        if kind == "string":
            if schema.get("format") == "date-time" or lowered in {"from", "to"}:
                delta = dt.timedelta(hours=1) if lowered == "from" else dt.timedelta(0)
                return (dt.datetime.now(dt.UTC) - delta).isoformat()
            if "email" in lowered:
                return f"r-{uid()}@example.com"
            if lowered == "orgid":
                return self.org_id
            if lowered in {"reasoncode"}:
                return "security_review"
            if lowered == "slug":
                return f"s-{uid()}"
            if schema.get("format") == "uuid" or lowered.endswith("id"):
                return str(uuid.uuid4())
            if "pattern" in schema and schema["pattern"].startswith("^[A-Za-z]"):
                return f"Role{uid()}"
            if "pattern" in schema:
                return f"n{uid()}"
            return f"value {uid()}"
        if kind == "integer":
            return max(int(schema.get("minimum", 1)), min(24, int(schema.get("maximum", 24))))
        if kind == "number":
            return 1.0
        if kind == "boolean":
            return False
        if kind == "array":
            if "role" in lowered:
                return ["Developer"]
            if "scope" in lowered:
                return ["orgs:read"]
            item = self.value(name.rstrip("s"), schema.get("items", {}))
            return [item]
        if kind == "object" or "properties" in schema:
            properties = schema.get("properties", {})
            if not properties:  # free-form maps (attributes, annotations): plant a secret key
                secret = canary()
                self.planted.add(secret)
                return {"team": "blue", "apiToken": secret}
            required = set(schema.get("required", []))
            return {
                key: self.value(key, sub)
                for key, sub in properties.items()
                if key in required or is_sensitive_key(key) or "$ref" not in str(sub)
            }
        return None


def collect_secrets(value: Any, found: set[str], key: str = "") -> None:
    """Every string the service handed out under a secret-looking key."""
    if isinstance(value, dict):
        for k, v in value.items():
            collect_secrets(v, found, k)
    elif isinstance(value, list):
        for item in value:
            collect_secrets(item, found, key)
    elif isinstance(value, str) and key and is_sensitive_key(key) and len(value) >= 8:
        found.add(value)


async def test_no_secret_reaches_events_or_the_stream(env: Env) -> None:
    document = env.app.openapi()
    admin = await env.admin_headers()
    handed_out: set[str] = {env.admin_password, STRONG_PASSWORD}
    planted: set[str] = set()

    login = await env.client.post(
        "/v1/auth/login", json={"email": env.admin_email, "password": env.admin_password}
    )
    collect_secrets(login.json(), handed_out)
    refreshed = await env.client.post(
        "/v1/auth/refresh", json={"refreshToken": login.json()["refreshToken"]}
    )
    if refreshed.status_code == 200:
        collect_secrets(refreshed.json(), handed_out)

    outcomes: dict[str, int] = {}
    for op in operations(env.app):
        if op.method not in MUTATIONS or op.public:
            continue
        org = await env.create_org()
        values: dict[str, str] = {"orgId": org["orgId"]}
        headers = admin
        if "{userId}" in op.path:
            member = await env.add_member(org["orgId"], ["OrgViewer"])
            values["userId"] = member.user_id
        if "{serviceAccountId}" in op.path:
            created = await env.client.post(
                f"/v1/orgs/{org['orgId']}/service-accounts",
                json={"name": f"sa-{uid()}", "roles": ["Developer"]},
                headers=admin,
            )
            collect_secrets(created.json(), handed_out)
            values["serviceAccountId"] = created.json()["serviceAccountId"]
        if "{roleName}" in op.path:
            name = f"Role{uid()}"
            await env.client.post(
                f"/v1/orgs/{org['orgId']}/roles",
                json={"name": name, "scopes": ["orgs:read"]},
                headers=admin,
            )
            values["roleName"] = name
        if "{inviteId}" in op.path:
            invited = await env.client.post(
                f"/v1/orgs/{org['orgId']}/invites",
                json={"email": f"i-{uid()}@example.com", "roles": ["OrgViewer"]},
                headers=admin,
            )
            values["inviteId"] = invited.json()["inviteId"]
        if op.path.startswith("/v1/auth/"):
            # The caller's own sessions and factors: a member of its own, never the shared admin.
            member = await env.add_member(org["orgId"], ["OrgViewer"])
            headers = member.headers
            sessions = await env.client.get("/v1/auth/sessions", headers=headers)
            values["sessionId"] = sessions.json()["items"][0]["sessionId"]
        body = None
        if op.path == "/v1/auth/mfa/totp/confirm":  # needs a real code: enroll first
            import pyotp

            enrolled = await env.client.post("/v1/auth/mfa/totp/enroll", headers=headers)
            assert enrolled.status_code < 300, enrolled.text
            collect_secrets(enrolled.json(), handed_out)
            body = {"code": pyotp.TOTP(enrolled.json()["secret"]).now()}
        elif op.has_body:
            spec = document["paths"][op.path][op.method.lower()]
            schema = spec["requestBody"]["content"]["application/json"]["schema"]
            body = Generator(document, org["orgId"], planted).value("body", schema)
        response = await env.client.request(op.method, op.url(**values), json=body, headers=headers)
        assert response.status_code < 500, (op, response.text)
        outcomes[f"{op.method} {op.path}"] = response.status_code
        if response.status_code < 300 and response.headers.get("content-type", "").startswith(
            "application/json"
        ):  # what was handed out (error bodies carry codes like "invalid_current_password")
            collect_secrets(response.json(), handed_out)

    # Invite acceptance with a password, and whatever the notifier delivered (invite tokens).
    org = await env.create_org()
    invite_token = await env.invite(org["orgId"], f"a-{uid()}@example.com", ["OrgViewer"])
    new_password = canary()
    planted.add(new_password)
    accepted = await env.client.post(
        "/v1/invites/accept", json={"token": invite_token, "password": new_password}
    )
    assert accepted.status_code == 200, accepted.text
    for message in env.receiver.messages:
        collect_secrets(message, handed_out)

    succeeded = [name for name, status in outcomes.items() if status < 300]
    assert len(outcomes) >= 20
    assert len(succeeded) >= 15, outcomes
    assert planted and handed_out

    await wait_outbox_empty(env.container)
    async with env.container.session_factory() as session:
        rows = (await session.execute(select(AuditEvent))).scalars().all()
    stored = b"\n".join(
        orjson.dumps(
            {
                "metadata": r.metadata_,
                "reason": r.reason,
                "target": r.target_id,
                "actor": r.actor_id,
                "ua": r.user_agent,
                "request": r.request_id,
            }
        )
        for r in rows
    ).decode()
    streamed = "\n".join(
        orjson.dumps(record["doc"]).decode() for record in await stream_documents(env)
    )
    assert "[REDACTED]" in stored  # the planted secret-named keys were masked
    for secret in planted | handed_out:
        assert secret not in stored, f"secret found in stored events: {secret[:12]}..."
        assert secret not in streamed, f"secret found on the stream: {secret[:12]}..."
