"""One settings tree for both processes, read from the environment (prefix ``USER_ORG_``).

Embedded mode (the default) needs nothing: SQLite under ``./var``, in-process cache, bus and
rate limiter, a local key directory. Production mode requires PostgreSQL and Redis and never
silently falls back to embedded backends.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Mode(StrEnum):
    EMBEDDED = "embedded"
    PRODUCTION = "production"


Port = Annotated[int, Field(ge=1, le=65535)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="USER_ORG_",
        env_file=None,
        extra="ignore",
        case_sensitive=False,
        frozen=True,
    )

    mode: Mode = Mode.EMBEDDED
    data_dir: Path = Path("./var")
    database_url: str = ""
    db_pool_size: int = Field(default=10, ge=1, le=200)
    redis_url: str | None = None
    keystore: Literal["local", "vault"] = "local"
    master_key: SecretStr | None = None
    vault_addr: str | None = None
    vault_token: SecretStr | None = None
    vault_transit_mount: str = Field(default="transit", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    vault_keystore_key: str = Field(default="userorg-keystore", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    vault_audit_key: str = Field(default="userorg-audit-signing", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    vault_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    key_prefix: str = Field(default="userorg", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")

    bind_host: str = "127.0.0.1"
    admin_api_port: Port = 8081
    reconciler_port: Port = 8082
    gateway_port: Port | None = None

    otlp_endpoint: str | None = None
    trace_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)

    issuer: str = "http://localhost:8081"
    public_base_url: str = "http://localhost:8081"
    access_token_ttl_seconds: int = Field(default=900, ge=30, le=86_400)
    refresh_token_ttl_seconds: int = Field(default=30 * 86_400, ge=300, le=365 * 86_400)
    session_idle_timeout_seconds: int = Field(default=7 * 86_400, ge=300)
    signing_key_rotation_seconds: int = Field(default=30 * 86_400, ge=3600)
    signing_key_prepublish_seconds: int = Field(default=900, ge=0, le=86_400)

    lockout_threshold: int = Field(default=5, ge=1, le=100)
    lockout_seconds: int = Field(default=900, ge=1, le=7 * 86_400)
    lockout_max_seconds: int = Field(default=86_400, ge=1, le=30 * 86_400)
    login_rate_per_ip_per_minute: int = Field(default=60, ge=1)
    login_rate_per_account_per_minute: int = Field(default=10, ge=1)
    password_reset_rate_per_ip_per_hour: int = Field(default=20, ge=1)
    password_reset_rate_per_account_per_hour: int = Field(default=5, ge=1)
    invite_rate_per_principal_per_hour: int = Field(default=100, ge=1)
    invite_rate_per_org_per_hour: int = Field(default=500, ge=1)
    mutation_rate_per_principal_per_minute: int = Field(default=300, ge=1)
    mfa_challenge_ttl_seconds: int = Field(default=300, ge=30, le=3600)
    totp_issuer: str = Field(default="userorg", min_length=1, max_length=64)
    webauthn_rp_id: str = Field(default="localhost", min_length=1, max_length=253)
    webauthn_rp_name: str = Field(default="userorg", min_length=1, max_length=64)
    webauthn_origins: str = "http://localhost:8081"
    password_reset_ttl_seconds: int = Field(default=3600, ge=300, le=7 * 86_400)

    argon2_time_cost: int = Field(default=2, ge=1, le=20)
    argon2_memory_kib: int = Field(default=19_456, ge=1024, le=4_194_304)
    argon2_parallelism: int = Field(default=1, ge=1, le=16)
    password_min_length: int = Field(default=12, ge=8, le=128)

    bootstrap_admin_email: str | None = None
    bootstrap_admin_password: SecretStr | None = None

    notifier: Literal["log", "webhook"] = "log"
    notify_webhook_url: str | None = None
    notify_webhook_secret: SecretStr | None = None
    notify_max_attempts: int = Field(default=8, ge=1, le=50)
    notify_retry_base_seconds: float = Field(default=2.0, gt=0, le=600)
    notify_poll_interval_seconds: float = Field(default=5.0, gt=0, le=3600)

    audit_stream: Literal["auto", "file", "kafka"] = "auto"
    audit_stream_file: Path | None = None
    kafka_bootstrap_servers: str | None = None
    audit_topic: str = Field(default="audit.identity", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    audit_relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    audit_relay_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    audit_relay_lease_seconds: float = Field(default=15.0, ge=1, le=600)
    audit_signer: Literal["auto", "local", "vault"] = "auto"
    audit_export_max_window_days: int = Field(default=366, ge=1, le=3660)
    audit_retention_days: int = Field(default=400, ge=1, le=36_500)

    org_purge_retention_hours: int = Field(default=30 * 24, ge=0)
    maintenance_interval_seconds: float = Field(default=60.0, gt=0)

    declarative_poll_interval_seconds: float = Field(default=60.0, ge=1, le=86_400)
    declarative_work_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    declarative_concurrency: int = Field(default=4, ge=1, le=64)
    declarative_lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    declarative_retry_base_seconds: float = Field(default=2.0, gt=0, le=600)
    declarative_retry_max_seconds: float = Field(default=300.0, gt=0, le=86_400)
    declarative_stop_grace_seconds: float = Field(default=10.0, ge=0, le=600)
    declarative_fetch_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    declarative_max_removal_fraction: float = Field(default=0.25, ge=0, le=1)
    declarative_max_files: int = Field(default=50, ge=1, le=10_000)
    declarative_max_file_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    declarative_webhook_secret: SecretStr | None = None
    declarative_git_token: SecretStr | None = None
    declarative_git_username: str = Field(default="x-access-token", min_length=1, max_length=100)
    declarative_git_ca_bundle: Path | None = None
    declarative_allow_local_repos: bool | None = None
    declarative_cache_dir: Path | None = None
    declarative_run_history: int = Field(default=200, ge=1, le=100_000)
    policy_dir: Path | None = None
    policy_reload_interval_seconds: float = Field(default=2.0, ge=0, le=3600)
    policy_decision_ttl_seconds: int = Field(default=60, ge=0, le=3600)
    policy_cache_size: int = Field(default=100_000, ge=0, le=10_000_000)
    policy_max_context_bytes: int = Field(default=8192, ge=256, le=1_048_576)
    mfa_step_up_scopes: str = ""
    mfa_step_up_max_age_seconds: int = Field(default=900, ge=30, le=86_400)
    opa_url: str | None = None
    opa_timeout_seconds: float = Field(default=1.0, gt=0, le=30)

    api_key_environment: str = Field(default="live", pattern=r"^[a-z0-9]{1,12}$")
    api_key_max_expiry_days: int = Field(default=365, ge=1, le=3650)
    api_key_default_grace_seconds: int = Field(default=86_400, ge=0)
    api_key_max_grace_seconds: int = Field(default=30 * 86_400, ge=0)
    api_key_issue_limit_per_principal: int = Field(default=10, ge=1)
    api_key_issue_limit_per_org: int = Field(default=100, ge=1)

    gateway_cache_ttl_seconds: float = Field(default=300.0, ge=0, le=3600)
    gateway_negative_cache_ttl_seconds: float = Field(default=30.0, ge=0, le=3600)
    gateway_cache_max_entries: int = Field(default=200_000, ge=100)
    gateway_flush_interval_seconds: float = Field(default=5.0, gt=0, le=300)
    gateway_decision_ttl_seconds: int = Field(default=1, ge=0, le=300)
    gateway_shared_secret: SecretStr | None = None
    gateway_access_log: bool = False

    budget_reservation_ttl_seconds: float = Field(default=900.0, gt=0, le=86_400)
    budget_sweep_interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    budget_cache_ttl_seconds: float = Field(default=30.0, ge=0, le=3600)
    budget_max_future_seconds: float = Field(default=300.0, ge=0, le=86_400)
    budget_redis_pool_size: int = Field(default=32, ge=1, le=1000)
    budget_override_requests_per_hour: int = Field(default=20, ge=1, le=10_000)
    budget_usage_consumer: bool = False
    budget_usage_topic: str = Field(default="billing.usage", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    budget_usage_dead_letter_topic: str = Field(
        default="billing.usage.dead-letter", pattern=r"^[A-Za-z0-9._-]{1,249}$"
    )
    budget_usage_consumer_group: str = Field(
        default="userorg-budgets", min_length=1, max_length=200
    )

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    cors_allow_origins: str = ""
    cors_allow_headers: str = "Authorization,Content-Type,If-Match,X-Request-Id"
    cors_max_age_seconds: int = Field(default=600, ge=0, le=86_400)

    @field_validator("cors_allow_origins")
    @classmethod
    def _check_cors_origins(cls, value: str) -> str:
        from urllib.parse import urlsplit

        for origin in _split(value):
            parts = urlsplit(origin)
            if (
                origin == "*"
                or parts.scheme not in {"http", "https"}
                or not parts.netloc
                or parts.path not in {"", "/"}
                or parts.query
            ):
                raise ValueError(
                    f"{origin!r}: a comma-separated list of exact http(s)://host[:port] origins "
                    "(no wildcard)"
                )
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgres", "postgresql")):
            raise ValueError("must start with sqlite:// or postgresql://")
        return value

    @field_validator("mfa_step_up_scopes")
    @classmethod
    def _check_step_up_scopes(cls, value: str) -> str:
        from userorg.authz.catalogue import SCOPES

        unknown = sorted({s for s in _split(value) if s not in SCOPES})
        if unknown:
            raise ValueError(f"unknown scopes: {', '.join(unknown)}")
        return value

    @field_validator("opa_url")
    @classmethod
    def _check_opa_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value or None

    @field_validator(
        "notify_webhook_url", "redis_url", "otlp_endpoint", "vault_addr", "kafka_bootstrap_servers"
    )
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_kafka_brokers(cls, value: str | None) -> str | None:
        """``host:port[,host:port]``: a malformed list fails the start instead of leaving the
        audit stream retrying an address that can never work."""
        if value is None:
            return None
        for broker in value.split(","):
            host, sep, port = broker.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f"{broker.strip()!r} is not host:port (expected host:port[,host:port])"
                )
        return value

    @field_validator("gateway_port", mode="before")
    @classmethod
    def _empty_port_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("otlp_endpoint")
    @classmethod
    def _check_otlp_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        parsed = urlsplit(value)
        if parsed.scheme not in {"http", "https"} or not parsed.hostname:
            raise ValueError("must be the collector's http(s)://host:port (OTLP/HTTP)")
        return value

    @model_validator(mode="after")
    def _check_mode(self) -> Settings:
        if self.mode is Mode.PRODUCTION:
            if not self.database_url.startswith(("postgres", "postgresql")):
                raise ValueError("USER_ORG_DATABASE_URL: production mode needs a postgresql:// URL")
            if not self.redis_url:
                raise ValueError("USER_ORG_REDIS_URL: production mode needs a redis:// URL")
            if self.keystore == "local" and self.master_key is None:
                raise ValueError(
                    "USER_ORG_MASTER_KEY: production mode with the local keystore needs a "
                    "base64 32-byte master key shared by all replicas"
                )
        if self.master_key is not None:
            import base64
            import binascii

            try:
                raw = base64.b64decode(self.master_key.get_secret_value(), validate=True)
            except binascii.Error:
                raw = b""
            if len(raw) != 32:
                raise ValueError("USER_ORG_MASTER_KEY: must be 32 bytes, base64-encoded")
        if self.api_key_default_grace_seconds > self.api_key_max_grace_seconds:
            raise ValueError(
                "USER_ORG_API_KEY_DEFAULT_GRACE_SECONDS: must not exceed "
                "USER_ORG_API_KEY_MAX_GRACE_SECONDS"
            )
        if (
            self.declarative_git_ca_bundle is not None
            and not self.declarative_git_ca_bundle.is_file()
        ):
            raise ValueError("USER_ORG_DECLARATIVE_GIT_CA_BUNDLE: no such file")
        if self.keystore == "vault" and not (self.vault_addr and self.vault_token):
            raise ValueError(
                "USER_ORG_VAULT_ADDR: USER_ORG_KEYSTORE=vault needs USER_ORG_VAULT_ADDR and "
                "USER_ORG_VAULT_TOKEN"
            )
        if self.effective_audit_signer == "vault" and not (self.vault_addr and self.vault_token):
            raise ValueError(
                "USER_ORG_VAULT_ADDR: USER_ORG_AUDIT_SIGNER=vault needs USER_ORG_VAULT_ADDR and "
                "USER_ORG_VAULT_TOKEN"
            )
        if self.budget_usage_consumer and not self.kafka_bootstrap_servers:
            raise ValueError(
                "USER_ORG_BUDGET_USAGE_CONSUMER needs USER_ORG_KAFKA_BOOTSTRAP_SERVERS"
            )
        if self.effective_audit_stream == "kafka" and not self.kafka_bootstrap_servers:
            raise ValueError(
                "USER_ORG_KAFKA_BOOTSTRAP_SERVERS: the audit stream goes to Kafka (production "
                "mode or USER_ORG_AUDIT_STREAM=kafka) and needs host:port[,host:port]"
            )
        if not self.webauthn_origin_list or not all(
            o.startswith(("https://", "http://")) for o in self.webauthn_origin_list
        ):
            raise ValueError(
                "USER_ORG_WEBAUTHN_ORIGINS: a comma-separated list of http(s):// origins"
            )
        if self.lockout_max_seconds < self.lockout_seconds:
            raise ValueError("USER_ORG_LOCKOUT_MAX_SECONDS: must be >= USER_ORG_LOCKOUT_SECONDS")
        if self.gateway_port is not None and self.gateway_port in {
            self.admin_api_port,
            self.reconciler_port,
        }:
            raise ValueError(
                "USER_ORG_GATEWAY_PORT: must differ from USER_ORG_ADMIN_API_PORT and "
                "USER_ORG_RECONCILER_PORT"
            )
        if self.notifier == "webhook" and not self.notify_webhook_url:
            raise ValueError("USER_ORG_NOTIFY_WEBHOOK_URL: required when USER_ORG_NOTIFIER=webhook")
        return self

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.rstrip("/") for origin in _split(self.cors_allow_origins)]

    @property
    def webauthn_origin_list(self) -> list[str]:
        return [o.strip() for o in self.webauthn_origins.split(",") if o.strip()]

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'userorg.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def key_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def git_cache_dir(self) -> Path:
        return self.declarative_cache_dir or self.data_dir / "git"

    @property
    def local_repos_allowed(self) -> bool:
        """Local paths and ``file://`` repos: on in embedded mode, opt-in in production."""
        if self.declarative_allow_local_repos is not None:
            return self.declarative_allow_local_repos
        return self.mode is Mode.EMBEDDED

    @property
    def effective_audit_stream(self) -> str:
        """``auto``: Kafka in production, a local JSONL file in embedded mode."""
        if self.audit_stream == "auto":
            return "kafka" if self.mode is Mode.PRODUCTION else "file"
        return self.audit_stream

    @property
    def effective_audit_stream_file(self) -> Path:
        return self.audit_stream_file or self.data_dir / "audit" / f"{self.audit_topic}.jsonl"

    @property
    def effective_audit_signer(self) -> str:
        """``auto``: Vault/OpenBao Transit when an address is configured, else a local key."""
        if self.audit_signer == "auto":
            return "vault" if self.vault_addr else "local"
        return self.audit_signer

    @property
    def mfa_step_up_scope_set(self) -> frozenset[str]:
        return frozenset(_split(self.mfa_step_up_scopes))

    @property
    def effective_policy_dir(self) -> Path:
        """The Rego policies: ``USER_ORG_POLICY_DIR``, else ``policies/`` of the source tree."""
        if self.policy_dir is not None:
            return self.policy_dir
        return Path(__file__).resolve().parents[2] / "policies"


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def format_settings_error(error: ValidationError) -> str:
    """One clear line naming the variable, e.g. ``USER_ORG_ADMIN_API_PORT: ...``."""
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if loc:
            parts.append(f"USER_ORG_{loc.upper()}: {message}")
        else:
            parts.append(message)
    return "configuration error: " + "; ".join(parts)


def load_settings() -> Settings:
    """Read settings from the environment; exit with one clear line when they are wrong."""
    try:
        return Settings()
    except ValidationError as error:
        print(format_settings_error(error), file=sys.stderr)
        raise SystemExit(2) from None
