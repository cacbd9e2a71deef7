"""Migrations run up, down and up again on both databases, and match the models."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import services
from userorg import migrate


async def _cycle(url: str) -> None:
    migrate.upgrade(url)
    assert await migrate.current_revision(url) == migrate.head_revision()
    migrate.downgrade(url, "base")
    assert await migrate.current_revision(url) is None
    migrate.upgrade(url)
    assert await migrate.current_revision(url) == migrate.head_revision()


async def test_sqlite_cycle_and_no_drift(tmp_path: Path) -> None:
    await _cycle(f"sqlite:///{tmp_path}/cycle.db")
    assert await migrate.schema_drift(f"sqlite:///{tmp_path}/drift.db") == []


@pytest.mark.production
async def test_postgres_cycle_and_no_drift() -> None:
    services.require_postgres()
    url = await services.create_database("userorg_migrations")
    drift_url = await services.create_database("userorg_drift")
    try:
        await _cycle(url)
        assert await migrate.schema_drift(drift_url) == []
    finally:
        await services.drop_database(url)
        await services.drop_database(drift_url)
