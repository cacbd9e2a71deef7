"""The hash chain: how an event's hash is computed and how a sequence of events is verified."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

GENESIS_HASH = "0" * 64


def canonical_json(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def event_hash(document: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of every field except ``hash`` itself."""
    body = {k: v for k, v in document.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    events_checked: int
    first_bad_event_id: str | None = None
    first_bad_seq: int | None = None
    reason: str | None = None


class ChainVerifier:
    """Incremental verification: feed events in order; the first failure is kept.

    ``expected_prev_hash``/``expected_first_seq`` anchor the start of the chain; pass ``None``
    to accept any starting point (a window that begins mid-chain).
    """

    def __init__(
        self, *, expected_prev_hash: str | None = GENESIS_HASH, expected_first_seq: int | None = 1
    ) -> None:
        self._prev_hash = expected_prev_hash
        self._next_seq = expected_first_seq
        self.count = 0
        self.failure: ChainVerification | None = None

    def feed(self, document: dict[str, Any]) -> bool:
        """Check one event; returns False (and records why) at the first bad one."""
        if self.failure is not None:
            return False
        self.count += 1
        seq = document.get("seq")
        reason = None
        if event_hash(document) != document.get("hash"):
            reason = "hash_mismatch: the event's content was altered"
        elif self._prev_hash is not None and document.get("prevHash") != self._prev_hash:
            reason = "broken_link: prevHash does not match the previous event"
        elif self._next_seq is not None and seq != self._next_seq:
            reason = f"sequence_gap: expected seq {self._next_seq}, found {seq}"
        if reason is not None:
            self.failure = ChainVerification(
                False,
                self.count,
                str(document.get("eventId")),
                seq if isinstance(seq, int) else None,
                reason,
            )
            return False
        self._prev_hash = str(document["hash"])
        self._next_seq = seq + 1 if isinstance(seq, int) else None
        return True

    def result(self) -> ChainVerification:
        return self.failure or ChainVerification(True, self.count)


def verify_chain(
    documents: Iterable[dict[str, Any]],
    *,
    expected_prev_hash: str | None = GENESIS_HASH,
    expected_first_seq: int | None = 1,
) -> ChainVerification:
    """Check hashes, links and sequence continuity; name the first bad event."""
    verifier = ChainVerifier(
        expected_prev_hash=expected_prev_hash, expected_first_seq=expected_first_seq
    )
    for document in documents:
        if not verifier.feed(document):
            break
    return verifier.result()
