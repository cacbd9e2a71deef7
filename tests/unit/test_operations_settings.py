"""Settings added by the operations issue fail at start with one line naming the variable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from userorg.settings import Settings, format_settings_error


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"USER_ORG_OTLP_ENDPOINT": "collector:4318"},
            "configuration error: USER_ORG_OTLP_ENDPOINT: must be the collector's "
            "http(s)://host:port (OTLP/HTTP)",
        ),
        (
            {"USER_ORG_TRACE_SAMPLE_RATIO": "1.5"},
            "configuration error: USER_ORG_TRACE_SAMPLE_RATIO: "
            "Input should be less than or equal to 1",
        ),
        (
            {"USER_ORG_GATEWAY_PORT": "0"},
            "configuration error: USER_ORG_GATEWAY_PORT: Input should be greater than or equal "
            "to 1",
        ),
        (
            {"USER_ORG_GATEWAY_PORT": "8082"},
            "configuration error: USER_ORG_GATEWAY_PORT: must differ from "
            "USER_ORG_ADMIN_API_PORT and USER_ORG_RECONCILER_PORT",
        ),
    ],
)
def test_bad_operations_settings(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert format_settings_error(caught.value) == expected


def test_good_operations_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER_ORG_OTLP_ENDPOINT", "https://otel.example.com:4318")
    monkeypatch.setenv("USER_ORG_GATEWAY_PORT", "8083")
    monkeypatch.setenv("USER_ORG_TRACE_SAMPLE_RATIO", "0.25")
    settings = Settings()
    assert settings.gateway_port == 8083
    assert settings.trace_sample_ratio == 0.25
    monkeypatch.setenv("USER_ORG_GATEWAY_PORT", "")
    monkeypatch.setenv("USER_ORG_OTLP_ENDPOINT", "")
    assert Settings().gateway_port is None
    assert Settings().otlp_endpoint is None


def test_the_dev_stack_creates_every_topic_the_service_uses_by_default() -> None:
    from userorg.devstack import TOPICS

    settings = Settings()
    used = {
        settings.audit_topic,
        settings.budget_usage_topic,
        settings.budget_usage_dead_letter_topic,
    }
    assert used == set(TOPICS)
