"""docs/configuration.md lists every setting (so the reference cannot drift from the code)."""

from __future__ import annotations

from pathlib import Path

from userorg.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_is_documented() -> None:
    text = DOC.read_text()
    missing = [name for name in Settings.model_fields if f"`USER_ORG_{name.upper()}`" not in text]
    assert not missing, f"undocumented settings: {missing}"
