"""The append-only audit trail and the per-org chain heads that order it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from userorg.db import Base, JSONType, UTCDateTime


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    chain_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    org_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    action: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(20))
    actor_type: Mapped[str] = mapped_column(String(30))
    actor_id: Mapped[str | None] = mapped_column(String(100), default=None)
    target_type: Mapped[str | None] = mapped_column(String(50), default=None)
    target_id: Mapped[str | None] = mapped_column(String(100), default=None)
    policy_id: Mapped[str | None] = mapped_column(String(100), default=None)
    reason: Mapped[str | None] = mapped_column(String(200), default=None)
    ip: Mapped[str | None] = mapped_column(String(64), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(500), default=None)
    request_id: Mapped[str | None] = mapped_column(String(100), default=None)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("chain_id", "seq"),
        Index(None, "org_id", "occurred_at"),
        Index(None, "org_id", "action"),
        Index(None, "org_id", "actor_id"),
        Index(None, "occurred_at"),
    )


class AuditChainHead(Base):
    """Last sequence number and hash per chain; its row lock serialises appends per org."""

    __tablename__ = "audit_chain_heads"

    chain_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))


# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
_OutboxId = BigInteger().with_variant(Integer(), "sqlite")


class AuditOutbox(Base):
    """Events waiting for the relay, written in the same transaction as the event itself.

    Rows are deleted once the stream acknowledged them. Within a chain, ``id`` follows ``seq``
    (appends to a chain are serialised by the chain head lock), so reading by ``id`` publishes
    every org's events in chain order.
    """

    __tablename__ = "audit_outbox"

    id: Mapped[int] = mapped_column(_OutboxId, primary_key=True, autoincrement=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    chain_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index(None, "chain_id", "seq"),)


class AuditExport(Base):
    """A signed export of one chain's events in a time window."""

    __tablename__ = "audit_exports"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    org_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    chain_id: Mapped[str] = mapped_column(String(64))
    window_from: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    window_to: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    requested_by_type: Mapped[str] = mapped_column(String(30))
    requested_by_id: Mapped[str | None] = mapped_column(String(100), default=None)
    first_seq: Mapped[int | None] = mapped_column(BigInteger, default=None)
    last_seq: Mapped[int | None] = mapped_column(BigInteger, default=None)
    event_count: Mapped[int | None] = mapped_column(BigInteger, default=None)
    anchor_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    checkpoint_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    key_id: Mapped[str | None] = mapped_column(String(100), default=None)
    signature: Mapped[str | None] = mapped_column(String(200), default=None)
    error: Mapped[str | None] = mapped_column(String(500), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)

    __table_args__ = (Index(None, "status", "created_at"), Index(None, "org_id", "created_at"))


class AuditCheckpoint(Base):
    """A signed seal of a chain up to ``seq``: events up to it may be purged, and the chain
    stays verifiable from ``hash`` on (the next event's ``prevHash``)."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    chain_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    head_seq: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    retention_cutoff: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    sealed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    key_id: Mapped[str] = mapped_column(String(100))
    signature: Mapped[str] = mapped_column(String(200))

    __table_args__ = (UniqueConstraint("chain_id", "seq"),)


class AuditSigningKey(Base):
    """Local Ed25519 keys that sign exports and checkpoints (embedded / local signer).

    The private half is envelope-encrypted by the keystore; retired keys keep their public half
    so that old exports stay verifiable.
    """

    __tablename__ = "audit_signing_keys"

    key_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    public_key_pem: Mapped[str] = mapped_column(Text)
    private_key_encrypted: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
