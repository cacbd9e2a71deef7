"""Queue a user-facing message in the caller's transaction; the dispatcher delivers it later."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from userorg.db import UnitOfWork, new_id
from userorg.notifications.models import Notification
from userorg.platform.keystore import Keystore


def payload_context(notification_id: uuid.UUID) -> str:
    return f"notification:{notification_id}"


async def enqueue(
    uow: UnitOfWork,
    *,
    keystore: Keystore,
    kind: str,
    org_id: uuid.UUID | None,
    payload: dict[str, Any],
    wake: Any = None,
) -> Notification:
    notification_id = new_id()
    ciphertext = await keystore.encrypt(
        orjson.dumps({"kind": kind, **payload}), context=payload_context(notification_id)
    )
    notification = Notification(
        id=notification_id, kind=kind, org_id=org_id, payload_encrypted=ciphertext
    )
    uow.session.add(notification)
    if wake is not None:
        uow.after_commit(wake)
    return notification
