"""Building the declarative pieces from the settings (both processes use the same ones)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from userorg.db import Publish
from userorg.declarative.budget import BudgetPolicyPort
from userorg.declarative.reconcile import ReconcileEngine
from userorg.declarative.source import GitSource
from userorg.settings import Settings
from userorg.telemetry.tracing import Tracing


def build_source(settings: Settings) -> GitSource:
    token = settings.declarative_git_token
    return GitSource(
        cache_dir=settings.git_cache_dir,
        token=token.get_secret_value() if token else None,
        username=settings.declarative_git_username,
        ca_bundle=settings.declarative_git_ca_bundle,
        timeout=settings.declarative_fetch_timeout_seconds,
        allow_local=settings.local_repos_allowed,
        max_files=settings.declarative_max_files,
        max_file_bytes=settings.declarative_max_file_bytes,
    )


def build_engine(
    settings: Settings,
    *,
    session_factory: async_sessionmaker[AsyncSession],
    budgets: BudgetPolicyPort | None,
    owner: str,
    publish: Publish | None,
    source: GitSource | None = None,
    tracing: Tracing | None = None,
) -> ReconcileEngine:
    return ReconcileEngine(
        settings=settings,
        session_factory=session_factory,
        source=source or build_source(settings),
        budgets=budgets,
        owner=owner,
        publish=publish,
        tracing=tracing,
    )
