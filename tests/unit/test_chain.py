"""Tamper evidence of the hash chain: alter, delete, reorder, insert."""

from __future__ import annotations

import copy
from typing import Any

from userorg.audit.chain import GENESIS_HASH, event_hash, verify_chain


def make_chain(n: int) -> list[dict[str, Any]]:
    events = []
    prev = GENESIS_HASH
    for seq in range(1, n + 1):
        doc: dict[str, Any] = {
            "eventId": f"e{seq}",
            "chainId": "org",
            "seq": seq,
            "action": "api:thing:do",
            "metadata": {"n": seq},
            "prevHash": prev,
        }
        doc["hash"] = event_hash(doc)
        prev = doc["hash"]
        events.append(doc)
    return events


def test_intact_chain_verifies() -> None:
    result = verify_chain(make_chain(5))
    assert result.ok
    assert result.events_checked == 5


def test_altered_event_is_named() -> None:
    events = make_chain(5)
    events[2]["metadata"] = {"n": 999}
    result = verify_chain(events)
    assert not result.ok
    assert result.first_bad_event_id == "e3"
    assert result.reason and result.reason.startswith("hash_mismatch")


def test_rehashed_alteration_breaks_the_next_link() -> None:
    events = make_chain(5)
    events[2]["metadata"] = {"n": 999}
    events[2]["hash"] = event_hash(events[2])
    result = verify_chain(events)
    assert result.first_bad_event_id == "e4"
    assert result.reason and result.reason.startswith("broken_link")


def test_deleted_event_is_detected() -> None:
    events = make_chain(5)
    del events[1]
    result = verify_chain(events)
    assert not result.ok
    assert result.first_bad_event_id == "e3"


def test_reordered_events_are_detected() -> None:
    events = make_chain(5)
    events[1], events[2] = events[2], events[1]
    result = verify_chain(events)
    assert not result.ok
    assert result.first_bad_event_id == "e3"


def test_inserted_event_is_detected() -> None:
    events = make_chain(5)
    forged = copy.deepcopy(events[1])
    forged["eventId"] = "forged"
    events.insert(2, forged)
    result = verify_chain(events)
    assert not result.ok
    assert result.first_bad_event_id == "forged"


def test_window_starting_mid_chain() -> None:
    events = make_chain(6)[3:]
    assert not verify_chain(events).ok
    assert verify_chain(events, expected_prev_hash=None, expected_first_seq=None).ok
