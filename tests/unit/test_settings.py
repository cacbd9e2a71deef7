from __future__ import annotations

import pytest
from pydantic import ValidationError

from userorg.db import async_database_url
from userorg.settings import Settings, format_settings_error


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///./var/x.db", "sqlite+aiosqlite:///./var/x.db"),
        ("sqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
        ("postgresql://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql://u@h/db?sslmode=require", "postgresql+asyncpg://u@h/db?ssl=require"),
    ],
)
def test_database_urls_pick_the_async_driver(given: str, expected: str) -> None:
    assert async_database_url(given) == expected


def test_unsupported_database_url() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        async_database_url("mysql://h/db")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"USER_ORG_ADMIN_API_PORT": "eighty"}, "USER_ORG_ADMIN_API_PORT"),
        ({"USER_ORG_ADMIN_API_PORT": "70000"}, "USER_ORG_ADMIN_API_PORT"),
        ({"USER_ORG_NOTIFIER": "pigeon"}, "USER_ORG_NOTIFIER"),
        ({"USER_ORG_NOTIFIER": "webhook"}, "USER_ORG_NOTIFY_WEBHOOK_URL"),
        ({"USER_ORG_DATABASE_URL": "mysql://x"}, "USER_ORG_DATABASE_URL"),
        ({"USER_ORG_MODE": "production"}, "USER_ORG_DATABASE_URL"),
        (
            {"USER_ORG_MODE": "production", "USER_ORG_DATABASE_URL": "postgresql://h/db"},
            "USER_ORG_REDIS_URL",
        ),
        (
            {
                "USER_ORG_MODE": "production",
                "USER_ORG_DATABASE_URL": "postgresql://h/db",
                "USER_ORG_REDIS_URL": "redis://h",
            },
            "USER_ORG_MASTER_KEY",
        ),
        ({"USER_ORG_MASTER_KEY": "c2hvcnQ="}, "USER_ORG_MASTER_KEY"),
    ],
)
def test_wrong_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    line = format_settings_error(caught.value)
    assert "\n" not in line
    assert variable in line


def test_defaults_are_embedded_and_zero_setup() -> None:
    settings = Settings()
    assert settings.mode == "embedded"
    assert settings.admin_api_port == 8081
    assert settings.reconciler_port == 8082
    assert settings.is_sqlite
    assert settings.effective_database_url.endswith("var/userorg.db")
