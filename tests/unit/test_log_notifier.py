from __future__ import annotations

import json

import pytest

from userorg.notifications.dispatcher import LogSender, verify_webhook_signature
from userorg.telemetry.logging import configure_logging


async def test_log_notifier_writes_one_structured_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    await LogSender().send(
        "n-1", {"kind": "invite", "to": "a@example.com", "token": "uoinv_x", "link": "http://l/x"}
    )
    lines = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    configure_logging("warning", "json")
    notes = [line for line in lines if line.get("event") == "notification"]
    assert len(notes) == 1
    assert notes[0]["token"] == "uoinv_x"
    assert notes[0]["notification_id"] == "n-1"


def test_webhook_signature_verification() -> None:
    import hashlib
    import hmac

    body = b'{"a":1}'
    signature = "sha256=" + hmac.new(b"s", b"123." + body, hashlib.sha256).hexdigest()
    assert verify_webhook_signature("s", "123", body, signature)
    assert not verify_webhook_signature("s", "124", body, signature)
    assert not verify_webhook_signature("t", "123", body, signature)
