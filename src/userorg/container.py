"""The process's long-lived objects, built once from the settings and shared by requests."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy import event
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

from userorg.audit.export import ExportWorker
from userorg.audit.recorder import OUTBOX_WRITTEN
from userorg.audit.relay import AuditRelay
from userorg.audit.signing import AuditSigner, LocalSigner, TransitSigner
from userorg.audit.stream import FileSink, KafkaSink, StreamSink
from userorg.authn.lockout import LockoutPolicy
from userorg.authn.mfa import RelyingParty
from userorg.authn.oauth2 import OAuth2Service
from userorg.authn.passwords import PasswordService
from userorg.authn.service import AuthConfig
from userorg.authn.tokens import TokenService
from userorg.authz.engine import PolicyEngine
from userorg.authz.invalidation import CHANNEL as AUTHZ_CHANNEL
from userorg.authz.invalidation import TRACKER_KEY, Change, ChangeTracker
from userorg.authz.opa import RemoteOpaEngine
from userorg.authz.policyset import PolicyConfig
from userorg.authz.rego import RegoEngine
from userorg.authz.reloader import PolicyWatcher, policy_check
from userorg.budgets.counters import BudgetCounters, DatabaseCounters, RedisCounters
from userorg.budgets.declarative import DeclarativeBudgets
from userorg.budgets.gate import BudgetEnforcer
from userorg.budgets.intake import UsageConsumer
from userorg.budgets.service import CHANNEL as BUDGET_CHANNEL
from userorg.budgets.service import Budgets
from userorg.budgets.sweeper import ReservationSweeper
from userorg.db import SESSION_COMMIT_HOOK, UnitOfWork, create_engine
from userorg.declarative.budget import BudgetPolicyPort
from userorg.declarative.reconcile import ReconcileEngine
from userorg.gateway.service import Gateway
from userorg.maintenance import Maintenance
from userorg.notifications.dispatcher import (
    LogSender,
    NotificationDispatcher,
    Sender,
    WebhookSender,
)
from userorg.ops import ReadinessCheck, database_check, redis_check
from userorg.platform.bus import InProcessBus, InvalidationBus, RedisBus, SqliteBus
from userorg.platform.keystore import Keystore, LocalKeystore, VaultTransitKeystore
from userorg.platform.ratelimit import (
    FailOpenRateLimiter,
    InProcessRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from userorg.settings import Settings
from userorg.telemetry.tracing import Tracing


class Container:
    def __init__(self, settings: Settings, *, service_name: str = "userorg-admin-api") -> None:
        self.settings = settings
        self.tracing = Tracing.from_settings(settings, service_name=service_name)
        self.engine = create_engine(
            settings.effective_database_url, pool_size=settings.db_pool_size
        )
        # Sessions notice changes that invalidate authorization decisions (authz.invalidation).
        self.authz_changes = ChangeTracker(
            invalidate=self._apply_authz_change, publish=self._publish_authz_change
        )

        class _Session(Session):
            """This container's sessions (lets it watch their commits)."""

        self.session_factory = async_sessionmaker(
            self.engine,
            expire_on_commit=False,
            info={TRACKER_KEY: self.authz_changes},
            sync_session_class=_Session,
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
        self.tracing.instrument_engine(self.engine)
        if self.read_engine is not self.engine:
            self.tracing.instrument_engine(self.read_engine)
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
        self.auth = auth_config(settings)
        self.oauth2 = OAuth2Service(
            tokens=self.tokens, token_ttl_seconds=settings.access_token_ttl_seconds
        )
        self.policy_engine: RegoEngine | RemoteOpaEngine = _build_policy_engine(settings)
        self.policy: PolicyEngine = self.policy_engine
        self.policy_watcher = PolicyWatcher(
            self.policy_engine, interval_seconds=settings.policy_reload_interval_seconds
        )
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
            "policy": self.policy_engine.probe
            if isinstance(self.policy_engine, RemoteOpaEngine)
            else policy_check(self.policy_engine),
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
            self.tracing.instrument_redis(self.redis)
        self.bus: InvalidationBus
        self.rate_limiter: RateLimiter
        if self.redis is not None:
            self.bus = RedisBus(self.redis, prefix=settings.key_prefix)
            self.rate_limiter = FailOpenRateLimiter(
                RedisRateLimiter(self.redis, prefix=settings.key_prefix), InProcessRateLimiter()
            )
        else:
            # Embedded mode: the admin-api and the reconciler are two processes on one data
            # directory; invalidations cross between them through a SQLite file.
            self.bus = (
                SqliteBus(settings.data_dir / "bus.db") if settings.is_sqlite else InProcessBus()
            )
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
        self.gateway_engine = (
            self.read_engine
            if settings.is_sqlite
            else create_engine(
                settings.effective_database_url, pool_size=settings.db_pool_size, autocommit=True
            )
        )
        # Budgets: the shared counters (Redis in production, the database in embedded mode),
        # the gateway's enforcer, the services' dependencies and the reservation sweeper.
        # Its own Redis pool that queues callers instead of failing when all connections are
        # busy (a burst of reservations must wait a moment, never answer 500).
        self.budget_redis: Redis | None = (
            Redis(
                connection_pool=BlockingConnectionPool.from_url(
                    settings.redis_url,
                    max_connections=settings.budget_redis_pool_size,
                    timeout=5,
                    socket_connect_timeout=2,
                    socket_timeout=2,
                )
            )
            if settings.redis_url
            else None
        )
        self.budget_counters: BudgetCounters = (
            RedisCounters(
                self.budget_redis,
                prefix=settings.key_prefix,
                reservation_ttl=settings.budget_reservation_ttl_seconds,
            )
            if self.budget_redis is not None
            else DatabaseCounters(
                self.session_factory,
                self.read_session_factory,
                reservation_ttl=settings.budget_reservation_ttl_seconds,
            )
        )
        self.budget_enforcer = BudgetEnforcer(
            read_session_factory=self.read_session_factory,
            counters=self.budget_counters,
            bus=self.bus,
            cache_ttl=settings.budget_cache_ttl_seconds,
        )
        self.budgets: Budgets | None = Budgets(
            counters=self.budget_counters,
            keystore=self.keystore,
            wake_notifier=self.notifier.wake,
            max_future_seconds=settings.budget_max_future_seconds,
            limiter=self.rate_limiter,
            override_requests_per_hour=settings.budget_override_requests_per_hour,
        )
        self.usage_consumer: UsageConsumer | None = None
        if settings.budget_usage_consumer and settings.kafka_bootstrap_servers:
            self.usage_consumer = UsageConsumer(
                uow_factory=self.uow,
                budgets=self.budgets,
                bootstrap_servers=settings.kafka_bootstrap_servers,
                topic=settings.budget_usage_topic,
                dead_letter_topic=settings.budget_usage_dead_letter_topic,
                group_id=settings.budget_usage_consumer_group,
            )
        self.budget_sweeper = ReservationSweeper(
            self.budget_counters, interval=settings.budget_sweep_interval_seconds
        )
        self.gateway = Gateway(
            read_engine=self.gateway_engine,
            session_factory=self.session_factory,
            read_session_factory=self.read_session_factory,
            uow_factory=self.uow,
            policy=self.policy,
            bus=self.bus,
            tokens=self.tokens,
            environment=settings.api_key_environment,
            cache_ttl=settings.gateway_cache_ttl_seconds,
            negative_ttl=settings.gateway_negative_cache_ttl_seconds,
            max_entries=settings.gateway_cache_max_entries,
            decision_ttl=settings.gateway_decision_ttl_seconds,
            flush_interval=settings.gateway_flush_interval_seconds,
            budgets=self.budget_enforcer,
        )
        # Every unit of work publishes, after its commit, the cache invalidations its flushes
        # noted (gateway/invalidation.py).
        self.session_factory.configure(
            info={
                TRACKER_KEY: self.authz_changes,
                SESSION_COMMIT_HOOK: self.gateway.publish_session_changes,
            }
        )
        # Declared budget policies are applied through the budgets capability.
        self.budget_policies: BudgetPolicyPort | None = DeclarativeBudgets()
        self._declarative: ReconcileEngine | None = None

    @property
    def declarative(self) -> ReconcileEngine:
        """The reconcile engine (plans and dry runs in the admin-api; the worker's core)."""
        if self._declarative is None:
            from userorg.declarative.factory import build_engine
            from userorg.declarative.worker import reconciler_id

            self._declarative = build_engine(
                self.settings,
                session_factory=self.session_factory,
                budgets=self.budget_policies,
                owner=reconciler_id(),
                publish=self.bus.publish,
            )
        return self._declarative

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
        if session.info.pop(OUTBOX_WRITTEN, False):
            self.audit_relay.wake()

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.session_factory, publish=self._publish)

    async def _publish(self, channel: str, message: dict[str, Any]) -> None:
        """After a commit: budget changes apply on this replica at once, then on the bus."""
        if channel == BUDGET_CHANNEL:
            await self.budget_enforcer.on_message(message)
        await self.bus.publish(channel, message)

    def _apply_authz_change(self, change: Change) -> None:
        if change.all:
            self.policy_engine.clear_cache()
        else:
            self.policy_engine.invalidate(org_id=change.org, principal_id=change.principal)

    async def _publish_authz_change(self, message: dict[str, Any]) -> None:
        await self.bus.publish(AUTHZ_CHANNEL, message)

    async def start(self, *, background: bool = True) -> None:
        """``background=False`` (the reconciler): decisions and the bus, no admin-api jobs."""
        # The policy first: a service that cannot decide must not start (fail closed).
        self.policy_engine.load()
        self.bus.subscribe(
            AUTHZ_CHANNEL, lambda message: self._apply_authz_change(Change.from_message(message))
        )
        self.bus.on_reset(self.policy_engine.clear_cache)
        await self.bus.start()
        if not background:
            return
        await self.tokens.ensure_active_key()
        await self.audit_signer.start()
        self.notifier.start()
        self.audit_relay.start()
        self.audit_exports.start()
        self.maintenance.start()
        self.policy_watcher.start()
        self.gateway.start()
        self.budget_sweeper.start()
        if self.usage_consumer is not None:
            self.usage_consumer.start()

    async def stop(self) -> None:
        if self.usage_consumer is not None:
            await self.usage_consumer.stop()
        await self.budget_sweeper.stop()
        await self.gateway.stop()
        await self.policy_watcher.stop()
        if isinstance(self.policy_engine, RemoteOpaEngine):
            await self.policy_engine.close()
        await self.maintenance.stop()
        await self.audit_exports.stop()
        await self.audit_relay.stop()
        await self.notifier.stop()
        await self.bus.stop()
        if self.redis is not None:
            await self.redis.aclose()
        if self.budget_redis is not None:
            await self.budget_redis.aclose()
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
        if self.gateway_engine is not self.read_engine:
            await self.gateway_engine.dispose()
        await asyncio.to_thread(self.tracing.shutdown)


def auth_config(settings: Settings) -> AuthConfig:
    return AuthConfig(
        refresh_ttl_seconds=settings.refresh_token_ttl_seconds,
        idle_timeout_seconds=settings.session_idle_timeout_seconds,
        lockout=LockoutPolicy(
            threshold=settings.lockout_threshold,
            seconds=settings.lockout_seconds,
            max_seconds=settings.lockout_max_seconds,
        ),
        relying_party=RelyingParty(
            rp_id=settings.webauthn_rp_id,
            name=settings.webauthn_rp_name,
            origins=settings.webauthn_origin_list,
        ),
        mfa_challenge_ttl_seconds=settings.mfa_challenge_ttl_seconds,
        totp_issuer=settings.totp_issuer,
        login_rate_per_ip=settings.login_rate_per_ip_per_minute,
        login_rate_per_account=settings.login_rate_per_account_per_minute,
        password_reset_rate_per_ip=settings.password_reset_rate_per_ip_per_hour,
        password_reset_rate_per_account=settings.password_reset_rate_per_account_per_hour,
        password_reset_ttl_seconds=settings.password_reset_ttl_seconds,
        public_base_url=settings.public_base_url,
    )


def policy_config(settings: Settings) -> PolicyConfig:
    return PolicyConfig(
        decision_ttl_seconds=settings.policy_decision_ttl_seconds,
        mfa_sensitive_scopes=settings.mfa_step_up_scope_set,
        mfa_max_age_seconds=settings.mfa_step_up_max_age_seconds,
    )


def _build_policy_engine(settings: Settings) -> RegoEngine | RemoteOpaEngine:
    if settings.opa_url:
        return RemoteOpaEngine(
            url=settings.opa_url,
            timeout_seconds=settings.opa_timeout_seconds,
            directory=settings.effective_policy_dir,
            config=policy_config(settings),
            cache_size=settings.policy_cache_size,
        )
    return RegoEngine(
        directory=settings.effective_policy_dir,
        config=policy_config(settings),
        cache_size=settings.policy_cache_size,
    )


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
