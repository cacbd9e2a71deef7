"""The committed OpenAPI contract, generated from the code."""

from __future__ import annotations

from typing import Any

import yaml

from userorg.settings import Settings


def openapi_document() -> dict[str, Any]:
    from userorg.main import create_app

    app = create_app(Settings(data_dir="/nonexistent-userorg-contract"), bootstrap=False)
    return app.openapi()


def render_openapi_yaml() -> str:
    return yaml.safe_dump(openapi_document(), sort_keys=False, allow_unicode=True, width=100)
