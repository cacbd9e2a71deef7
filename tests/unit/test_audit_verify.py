"""Offline verification names the first bad event: altered, removed, reordered, inserted."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from userorg.audit.chain import GENESIS_HASH, event_hash
from userorg.audit.signing import key_id_for, public_pem
from userorg.cli import app

CHAIN = "0192f0c4-0000-7000-8000-000000000001"


def _events(count: int, *, first_seq: int = 1, prev: str = GENESIS_HASH) -> list[dict]:
    events = []
    for seq in range(first_seq, first_seq + count):
        document = {
            "eventId": f"0192f0c4-0000-7000-8000-{seq:012d}",
            "chainId": CHAIN,
            "seq": seq,
            "orgId": CHAIN,
            "occurredAt": f"2026-01-01T00:00:{seq % 60:02d}.000000Z",
            "action": "api:organization:update",
            "outcome": "success",
            "actor": {"type": "user", "id": "u1"},
            "target": {"type": "organization", "id": CHAIN},
            "policyId": None,
            "reason": None,
            "ip": "127.0.0.1",
            "userAgent": "test",
            "requestId": f"r{seq}",
            "metadata": {"changes": {"name": f"N{seq}"}},
            "prevHash": prev,
        }
        document["hash"] = event_hash(document)
        prev = document["hash"]
        events.append(document)
    return events


class Export:
    def __init__(self, tmp_path: Path, count: int = 6) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.key_id = key_id_for(self.key.public_key())
        self.events = _events(count)
        self.header = {
            "kind": "userorg.audit.export",
            "formatVersion": 1,
            "exportId": "e1",
            "chainId": CHAIN,
            "firstSeq": 1,
            "lastSeq": count,
            "eventCount": count,
            "anchorHash": GENESIS_HASH,
            "checkpoint": None,
            "keyId": self.key_id,
        }
        self.dir = tmp_path
        self.pem = tmp_path / "key.pem"
        self.pem.write_text(public_pem(self.key.public_key()))

    def lines(self) -> list[bytes]:
        return [orjson.dumps(self.header)] + [orjson.dumps(e) for e in self.events]

    def write(
        self, lines: list[bytes], *, sign_lines: list[bytes] | None = None
    ) -> tuple[Path, Path]:
        data = b"\n".join(lines) + b"\n"
        signed = b"\n".join(sign_lines if sign_lines is not None else lines) + b"\n"
        path, sig = self.dir / "export.ndjson", self.dir / "export.sig"
        path.write_bytes(data)
        sig.write_bytes(self.key.sign(hashlib.sha256(signed).digest()))
        return path, sig


def _verify(path: Path, sig: Path, pem: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        ["audit", "verify", str(path), "--signature", str(sig), "--public-key", str(pem), *extra],
    )
    return result.exit_code, result.output


@pytest.fixture
def export(tmp_path: Path) -> Export:
    return Export(tmp_path)


def test_intact_export_verifies(export: Export) -> None:
    path, sig = export.write(export.lines())
    code, output = _verify(path, sig, export.pem)
    assert code == 0, output
    assert "signature: valid" in output
    assert "chain: intact, seq 1..6" in output


def test_altered_event_is_named(export: Export) -> None:
    original = export.lines()
    lines = list(original)
    lines[3] = lines[3].replace(b'"N3"', b'"forged"')
    path, sig = export.write(lines, sign_lines=original)
    code, output = _verify(path, sig, export.pem)
    assert code == 1
    assert "signature: INVALID" in output
    assert f"event {export.events[2]['eventId']}, seq 3: altered" in output


def test_altered_event_with_recomputed_hashes_fails_the_signature(export: Export) -> None:
    """A forger who rewrites the chain consistently still cannot sign."""
    original = export.lines()
    export.events[2]["metadata"] = {"changes": {"name": "forged"}}
    prev = export.events[1]["hash"]
    for event in export.events[2:]:
        event["prevHash"] = prev
        event["hash"] = event_hash(event)
        prev = event["hash"]
    path, sig = export.write(export.lines(), sign_lines=original)
    code, output = _verify(path, sig, export.pem)
    assert code == 1
    assert "chain: intact" in output
    assert "signature: INVALID" in output


def test_removed_event_is_named(export: Export) -> None:
    lines = export.lines()
    del lines[3]  # seq 3
    path, sig = export.write(lines, sign_lines=export.lines())
    code, output = _verify(path, sig, export.pem, "--json")
    assert code == 1
    report = orjson.loads(output)
    assert report["problem"]["kind"] == "removed"
    assert report["problem"]["seq"] == 4
    assert "seq 3" in report["problem"]["message"]
    assert report["signature_ok"] is False


def test_removed_last_event_is_detected(export: Export) -> None:
    lines = export.lines()[:-1]
    path, sig = export.write(lines, sign_lines=export.lines())
    code, output = _verify(path, sig, export.pem)
    assert code == 1
    assert "removed" in output and "seq 6..6 missing" in output


def test_reordered_events_are_named(export: Export) -> None:
    lines = export.lines()
    lines[2], lines[3] = lines[3], lines[2]  # seq 2 and 3 swapped
    path, sig = export.write(lines, sign_lines=export.lines())
    code, output = _verify(path, sig, export.pem, "--json")
    assert code == 1
    problem = orjson.loads(output)["problem"]
    assert problem["kind"] == "reordered"
    assert problem["seq"] == 3 and problem["line"] == 3
    assert "seq 2 was moved to line 4" in problem["message"]


def test_inserted_events_are_named(export: Export) -> None:
    # A copy of an existing event, and a fabricated one with a valid hash of its own.
    lines = export.lines()
    duplicate = [*lines[:4], lines[2], *lines[4:]]
    path, sig = export.write(duplicate, sign_lines=lines)
    code, output = _verify(path, sig, export.pem, "--json")
    problem = orjson.loads(output)["problem"]
    assert code == 1
    assert (problem["kind"], problem["seq"], problem["line"]) == ("inserted", 2, 5)

    # A fabricated event with a hash of its own, linked to seq 4, inserted before seq 5: the
    # chain alone cannot tell which of the two seq-5 events is genuine; both are named.
    forged = dict(export.events[4])
    forged["eventId"] = "0192f0c4-0000-7000-8000-999999999999"
    forged["action"] = "api:user:remove"
    forged["hash"] = event_hash(forged)
    fabricated = [*lines[:5], orjson.dumps(forged), *lines[5:]]
    path, sig = export.write(fabricated, sign_lines=lines)
    code, output = _verify(path, sig, export.pem, "--json")
    problem = orjson.loads(output)["problem"]
    assert code == 1
    assert problem["kind"] == "inserted" and problem["seq"] == 5
    assert problem["related_event_id"] == "0192f0c4-0000-7000-8000-999999999999"
    assert problem["related_line"] == 6
    # The same fabricated event replacing the genuine one breaks the next link.
    replaced = [*lines[:5], orjson.dumps(forged), *lines[6:]]
    path, sig = export.write(replaced, sign_lines=lines)
    code, output = _verify(path, sig, export.pem)
    assert code == 1
    assert "also suspect: line 6, event 0192f0c4-0000-7000-8000-999999999999" in output
    assert "signature: INVALID" in output


def test_wrong_key_or_signature_fails(export: Export, tmp_path: Path) -> None:
    path, sig = export.write(export.lines())
    other = tmp_path / "other.pem"
    other.write_text(public_pem(Ed25519PrivateKey.generate().public_key()))
    code, output = _verify(path, sig, other)
    assert code == 1
    assert "signature: INVALID" in output
    sig.write_bytes(b"\x00" * 64)
    code, output = _verify(path, sig, export.pem)
    assert code == 1 and "signature: INVALID" in output


def test_unusable_input_exits_2(export: Export, tmp_path: Path) -> None:
    path, sig = export.write(export.lines())
    not_export = tmp_path / "plain.ndjson"
    not_export.write_bytes(b'{"hello": 1}\n')
    for args, fragment in (
        (
            [str(not_export), "--signature", str(sig), "--public-key", str(export.pem)],
            "not a userorg audit export",
        ),
        (
            [str(tmp_path / "missing"), "--signature", str(sig), "--public-key", str(export.pem)],
            "cannot read",
        ),
        (
            [str(path), "--signature", str(sig), "--public-key", str(path)],
            "not an Ed25519 public key",
        ),
        ([str(path), "--signature", str(sig)], "needs --public-key"),
    ):
        result = CliRunner().invoke(app, ["audit", "verify", *args])
        assert result.exit_code == 2, result.output
        assert fragment in result.output
