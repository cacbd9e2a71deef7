"""The process's long-lived objects, built once from the settings and shared by requests."""

from __future__ import annotations

import base64

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import async_sessionmaker

from userorg.authn.passwords import PasswordService
from userorg.authn.tokens import TokenService
from userorg.authz.engine import PolicyEngine, RbacEngine
from userorg.db import UnitOfWork, create_engine
from userorg.declarative.budget import BudgetPolicyPort
from userorg.declarative.reconcile import ReconcileEngine
from userorg.maintenance import Maintenance
from userorg.notifications.dispatcher import (
    LogSender,
    NotificationDispatcher,
    Sender,
    WebhookSender,
)
from userorg.ops import ReadinessCheck, database_check, redis_check
from userorg.platform.bus import InProcessBus, InvalidationBus, RedisBus
from userorg.platform.keystore import Keystore, LocalKeystore
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
        self.session_factory = async_sessionmaker(self.engine, expire_on_commit=False)
        # Reads that may happen while a request holds the writer (key ring reloads, cache
        # misses): a separate pool on SQLite, the same database either way.
        self.read_engine = (
            create_engine(settings.effective_database_url, read_only=True)
            if settings.is_sqlite
            else self.engine
        )
        self.read_session_factory = async_sessionmaker(self.read_engine, expire_on_commit=False)
        self.keystore: Keystore = _build_keystore(settings)
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
        self.maintenance = Maintenance(self)
        # Set by the budgets capability; until then declared budget policies are reported as
        # not applied (see declarative/budget.py).
        self.budget_policies: BudgetPolicyPort | None = None
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

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.session_factory, publish=self.bus.publish)

    async def start(self) -> None:
        await self.bus.start()
        await self.tokens.ensure_active_key()
        self.notifier.start()
        self.maintenance.start()

    async def stop(self) -> None:
        await self.maintenance.stop()
        await self.notifier.stop()
        await self.bus.stop()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()


def _build_keystore(settings: Settings) -> Keystore:
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
