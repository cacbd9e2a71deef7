"""The process's long-lived objects, built once from the settings and shared by requests."""

from __future__ import annotations

import base64
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import event
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

from userorg.audit.export import ExportWorker
from userorg.audit.recorder import OUTBOX_PENDING
from userorg.audit.relay import AuditRelay
from userorg.audit.signing import AuditSigner, LocalSigner, TransitSigner
from userorg.audit.stream import FileSink, KafkaSink, StreamSink
from userorg.authn.passwords import PasswordService
from userorg.authn.tokens import TokenService
from userorg.authz.engine import PolicyEngine, RbacEngine
from userorg.db import UnitOfWork, create_engine
from userorg.maintenance import Maintenance
from userorg.notifications.dispatcher import (
    LogSender,
    NotificationDispatcher,
    Sender,
    WebhookSender,
)
from userorg.ops import ReadinessCheck, database_check, redis_check
from userorg.platform.bus import InProcessBus, InvalidationBus, RedisBus
from userorg.platform.keystore import Keystore, LocalKeystore, VaultTransitKeystore
from userorg.platform.ratelimit import (
    FailOpenRateLimiter,
    InProcessRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from userorg.settings import Settings


class Container:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = create_engine(
            settings.effective_database_url, pool_size=settings.db_pool_size
        )

        class _Session(Session):
            """This container's sessions (lets it watch their commits)."""

        self.session_factory = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=_Session
        )
        # Wake the audit relay as soon as a transaction that wrote audit events commits.
        event.listen(_Session, "after_commit", self._after_commit)
        # Reads that may happen while a request holds the writer (key ring reloads, cache
        # misses): a separate pool on SQLite, the same database either way.
        self.read_engine = (
            create_engine(settings.effective_database_url, read_only=True)
            if settings.is_sqlite
            else self.engine
        )
        self.read_session_factory = async_sessionmaker(self.read_engine, expire_on_commit=False)
        self.vault: Any = None
        if settings.vault_addr and settings.vault_token:
            from userorg.platform.vault import make_client

            self.vault = make_client(
                settings.vault_addr,
                settings.vault_token.get_secret_value(),
                timeout=settings.vault_timeout_seconds,
            )
        self.keystore: Keystore = _build_keystore(settings, self.vault)
        self.passwords = PasswordService(
            time_cost=settings.argon2_time_cost,
            memory_kib=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            min_length=settings.password_min_length,
        )
        self.tokens = TokenService(
            session_factory=self.session_factory,
            read_session_factory=self.read_session_factory,
            keystore=self.keystore,
            issuer=settings.issuer,
            access_token_ttl_seconds=settings.access_token_ttl_seconds,
        )
        self.policy: PolicyEngine = RbacEngine()
        self.notifier = NotificationDispatcher(
            session_factory=self.session_factory,
            keystore=self.keystore,
            sender=_build_sender(settings),
            max_attempts=settings.notify_max_attempts,
            retry_base_seconds=settings.notify_retry_base_seconds,
            poll_interval=settings.notify_poll_interval_seconds,
        )

        self.readiness_checks: dict[str, ReadinessCheck] = {
            "database": database_check(self.engine),
        }
        self.redis: Redis | None = None
        if settings.redis_url:
            self.redis = Redis.from_url(
                settings.redis_url,
                socket_connect_timeout=2,
                socket_timeout=2,
                health_check_interval=15,
            )
            self.readiness_checks["redis"] = redis_check(self.redis)
        self.bus: InvalidationBus
        self.rate_limiter: RateLimiter
        if self.redis is not None:
            self.bus = RedisBus(self.redis, prefix=settings.key_prefix)
            self.rate_limiter = FailOpenRateLimiter(
                RedisRateLimiter(self.redis, prefix=settings.key_prefix), InProcessRateLimiter()
            )
        else:
            self.bus = InProcessBus()
            self.rate_limiter = InProcessRateLimiter()
        self.audit_signer: AuditSigner = self._build_signer()
        self.audit_relay = AuditRelay(
            session_factory=self.session_factory,
            read_session_factory=self.read_session_factory,
            sink=_build_sink(settings),
            lease_seconds=settings.audit_relay_lease_seconds,
            batch_size=settings.audit_relay_batch_size,
            poll_interval=settings.audit_relay_poll_seconds,
        )
        self.readiness_checks["auditStream"] = self.audit_relay.readiness
        self.audit_exports = ExportWorker(
            session_factory=self.session_factory,
            read_session_factory=self.read_session_factory,
            signer=self.audit_signer,
            poll_interval=max(1.0, settings.audit_relay_poll_seconds),
        )
        self.maintenance = Maintenance(self)

    def _build_signer(self) -> AuditSigner:
        if self.settings.effective_audit_signer == "vault":
            return TransitSigner(
                self.vault,
                mount=self.settings.vault_transit_mount,
                key_name=self.settings.vault_audit_key,
            )
        return LocalSigner(
            session_factory=self.session_factory,
            read_session_factory=self.read_session_factory,
            keystore=self.keystore,
        )

    def _after_commit(self, session: Session) -> None:
        if session.info.pop(OUTBOX_PENDING, False):
            self.audit_relay.wake()

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.session_factory)

    async def start(self) -> None:
        await self.bus.start()
        await self.tokens.ensure_active_key()
        await self.audit_signer.start()
        self.notifier.start()
        self.audit_relay.start()
        self.audit_exports.start()
        self.maintenance.start()

    async def stop(self) -> None:
        await self.maintenance.stop()
        await self.audit_exports.stop()
        await self.audit_relay.stop()
        await self.notifier.stop()
        await self.bus.stop()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()


def _build_keystore(settings: Settings, vault: Any) -> Keystore:
    if settings.keystore == "vault":
        return VaultTransitKeystore(
            vault, mount=settings.vault_transit_mount, key_name=settings.vault_keystore_key
        )
    if settings.master_key is not None:
        return LocalKeystore(base64.b64decode(settings.master_key.get_secret_value()))
    return LocalKeystore.from_directory(settings.key_dir)


def _build_sender(settings: Settings) -> Sender:
    if settings.notifier == "webhook":
        assert settings.notify_webhook_url is not None
        secret = settings.notify_webhook_secret
        return WebhookSender(
            settings.notify_webhook_url, secret.get_secret_value() if secret else None
        )
    return LogSender()


def _build_sink(settings: Settings) -> StreamSink:
    if settings.effective_audit_stream == "kafka":
        assert settings.kafka_bootstrap_servers is not None
        return KafkaSink(
            settings.kafka_bootstrap_servers,
            settings.audit_topic,
            message_timeout_seconds=settings.audit_relay_lease_seconds / 3,
        )
    return FileSink(settings.effective_audit_stream_file)
