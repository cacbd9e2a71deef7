"""Offline verification of an export file: signature, hash chain, continuity, completeness.

Reads the file once, line by line (constant memory), and reports the first bad event with its
line number, event id, seq and what is wrong with it:

- ``altered``: the event's content does not match its hash;
- ``removed``: a seq is missing (the named event is the one after the gap), or the file ends
  before the header's ``lastSeq``;
- ``reordered``: an event appears before one with a lower seq (the missing seq shows up later);
- ``inserted``: an event that is not part of the chain (a repeated seq, or a link that does not
  match the previous event's hash);
- ``signature``: the detached signature does not match the file's SHA-256 digest.

The signature is Ed25519 over the 32-byte SHA-256 digest of the whole file (see
``audit.signing``). No database, no network.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from userorg.audit.chain import event_hash
from userorg.audit.export import EXPORT_KIND
from userorg.audit.retention import checkpoint_digest
from userorg.audit.signing import key_id_for, verify_signature


class VerifyUsageError(Exception):
    """The inputs cannot be verified at all (not an export, unreadable): exit code 2."""


@dataclass
class Problem:
    kind: str
    message: str
    line: int | None = None
    event_id: str | None = None
    seq: int | None = None
    # The other event involved, when the chain alone cannot tell which of two was forged.
    related_event_id: str | None = None
    related_line: int | None = None


@dataclass
class VerifyReport:
    path: str
    events: int = 0
    sha256: str = ""
    signature_ok: bool | None = None
    key_id: str | None = None
    chain_ok: bool = True
    checkpoint_ok: bool | None = None
    header: dict[str, Any] = field(default_factory=dict)
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.chain_ok and self.signature_ok is True and self.checkpoint_ok is not False

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def verify_export(
    path: Path, *, signature: bytes | None, public_keys: list[Ed25519PublicKey]
) -> VerifyReport:
    keys = {key_id_for(key): key for key in public_keys}
    report = VerifyReport(path=str(path))
    digest = hashlib.sha256()
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as error:
        raise VerifyUsageError(f"cannot read {path}: {error.strerror}") from error
    with handle:
        first = handle.readline()
        digest.update(first)
        try:
            header = orjson.loads(first)
        except orjson.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("kind") != EXPORT_KIND:
            raise VerifyUsageError(f"{path} is not a userorg audit export (no header line)")
        report.header = header
        checker = _ChainChecker(header)
        line_no = 1
        for line in handle:
            line_no += 1
            digest.update(line)
            if report.problem is None:
                report.problem = checker.feed(line, line_no)
            elif checker.missing_seq is not None:
                checker.look_for_missing(line, line_no)
        if report.problem is None:
            report.problem = checker.finish(line_no)
        elif checker.missing_seq is not None:
            checker.explain_missing(report.problem)
        report.events = checker.count
    report.sha256 = digest.hexdigest()
    report.chain_ok = report.problem is None
    report.key_id = header.get("keyId")
    key = _pick_key(keys, report.key_id, report)
    if signature is None:
        report.notes.append("no signature given: the chain was checked, authenticity was not")
    elif key is not None:
        report.signature_ok = verify_signature(key, signature, digest.digest())
    if report.signature_ok is False:
        report.notes.append(
            "the signature does not match this file: it was changed after signing, "
            "or it was signed by another key"
        )
    checkpoint = header.get("checkpoint")
    if isinstance(checkpoint, dict):
        report.checkpoint_ok = _check_checkpoint(checkpoint, header, keys, report)
    return report


def _pick_key(
    keys: dict[str, Ed25519PublicKey], key_id: Any, report: VerifyReport
) -> Ed25519PublicKey | None:
    if isinstance(key_id, str) and key_id in keys:
        return keys[key_id]
    if len(keys) == 1:
        only_id, only = next(iter(keys.items()))
        if key_id != only_id:
            report.notes.append(f"the header names key {key_id}; checking with {only_id}")
        return only
    if keys:
        report.notes.append(f"none of the given public keys is {key_id}")
        report.signature_ok = False
    return None


def _check_checkpoint(
    checkpoint: dict[str, Any],
    header: dict[str, Any],
    keys: dict[str, Ed25519PublicKey],
    report: VerifyReport,
) -> bool | None:
    import base64

    if header.get("firstSeq") != checkpoint.get("seq", -1) + 1 or header.get(
        "anchorHash"
    ) != checkpoint.get("hash"):
        report.notes.append("the export does not start right after its checkpoint")
        return False
    key = keys.get(str(checkpoint.get("keyId")))
    if key is None:
        report.notes.append(
            f"checkpoint signed by key {checkpoint.get('keyId')}: pass that public key too "
            "to check it"
        )
        return None
    try:
        signature = base64.b64decode(str(checkpoint.get("signature", "")))
    except ValueError:
        return False
    ok = verify_signature(key, signature, checkpoint_digest(checkpoint))
    if not ok:
        report.notes.append("the retention checkpoint's signature is not valid")
    return ok


class _ChainChecker:
    def __init__(self, header: dict[str, Any]) -> None:
        self.first_seq = header.get("firstSeq")
        self.last_seq = header.get("lastSeq")
        self.expected_count = header.get("eventCount")
        self.expected_seq: int | None = self.first_seq
        self.prev_hash: str | None = header.get("anchorHash")
        self.chain_id = header.get("chainId")
        self.count = 0
        self.seen_seq_max = (self.first_seq or 1) - 1
        # After a gap: the seq that was expected, to tell "removed" from "reordered".
        self.missing_seq: int | None = None
        self.missing_found_line: int | None = None
        self.prev_event_id: str | None = None
        self.prev_line: int | None = None

    def feed(self, raw: bytes, line_no: int) -> Problem | None:
        self.count += 1
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return Problem("altered", "the line is not valid JSON", line_no)
        if not isinstance(document, dict):
            return Problem("altered", "the line is not a JSON object", line_no)
        event_id = str(document.get("eventId"))
        seq = document.get("seq")
        seq_or_none = seq if isinstance(seq, int) else None

        def problem(kind: str, message: str, *, related: bool = False) -> Problem:
            return Problem(
                kind,
                message,
                line=line_no,
                event_id=event_id,
                seq=seq_or_none,
                related_event_id=self.prev_event_id if related else None,
                related_line=self.prev_line if related else None,
            )

        if event_hash(document) != document.get("hash"):
            return problem("altered", "the event's content does not match its hash")
        if document.get("chainId") != self.chain_id:
            return problem("inserted", f"the event belongs to chain {document.get('chainId')}")
        if not isinstance(seq, int):
            return problem("altered", "the event has no integer seq")
        expected = self.expected_seq
        if expected is not None and seq != expected:
            if seq < expected:
                if seq == expected - 1:
                    return problem(
                        "inserted",
                        f"seq {seq} appears twice (line {self.prev_line}: event "
                        f"{self.prev_event_id}, and this one): one of them was inserted",
                        related=True,
                    )
                return problem("inserted", f"seq {seq} appears again after seq {expected - 1}")
            self.missing_seq = expected
            return problem(
                "removed",
                f"expected seq {expected}, found {seq}: event(s) seq {expected}"
                + (f"..{seq - 1}" if seq - 1 > expected else "")
                + " are missing before this one",
            )
        if self.prev_hash is not None and document.get("prevHash") != self.prev_hash:
            return problem(
                "inserted",
                "prevHash does not match the hash of the event before it (line "
                f"{self.prev_line}: event {self.prev_event_id}): one of the two was inserted or "
                "replaced",
                related=True,
            )
        self.prev_hash = str(document.get("hash"))
        self.prev_event_id = event_id
        self.prev_line = line_no
        self.expected_seq = seq + 1
        self.seen_seq_max = max(self.seen_seq_max, seq)
        return None

    def look_for_missing(self, raw: bytes, line_no: int) -> None:
        if self.missing_found_line is not None:
            return
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if isinstance(document, dict) and document.get("seq") == self.missing_seq:
            self.missing_found_line = line_no

    def explain_missing(self, problem: Problem) -> None:
        if self.missing_found_line is not None:
            problem.kind = "reordered"
            problem.message = (
                f"expected seq {self.missing_seq}, found {problem.seq}: seq {self.missing_seq} "
                f"was moved to line {self.missing_found_line}"
            )

    def finish(self, last_line: int) -> Problem | None:
        if self.expected_count is not None and self.count != self.expected_count:
            if self.count < self.expected_count:
                return Problem(
                    "removed",
                    f"the file ends after {self.count} events; the header says "
                    f"{self.expected_count} (seq {self.expected_seq}..{self.last_seq} missing)",
                    last_line,
                )
            return Problem(
                "inserted",
                f"the file has {self.count} events; the header says {self.expected_count}",
                last_line,
            )
        if self.last_seq is not None and self.expected_seq != self.last_seq + 1:
            return Problem(
                "removed",
                f"the last event is seq {(self.expected_seq or 1) - 1}, the header says "
                f"{self.last_seq}",
                last_line,
            )
        return None
