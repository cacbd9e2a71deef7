"""A Vault / OpenBao client (``hvac``) for the Transit secrets engine, and its failure type.

hvac is synchronous; callers run it in a worker thread (``asyncio.to_thread``). The Transit
engine must be mounted (``bao secrets enable transit``) by the operator; keys are created on
first use when the token may (``transit/keys/<name>`` create), or provisioned beforehand.
"""

from __future__ import annotations

from typing import Any

from userorg.errors import ServiceUnavailable


class VaultUnavailable(ServiceUnavailable):
    code = "dependency_unavailable"

    def __init__(self, operation: str, error: BaseException) -> None:
        super().__init__(
            "The key service (Vault/OpenBao) is unavailable; retry later",
            details={"dependency": "vault", "operation": operation},
        )
        self.cause = f"{type(error).__name__}: {error}"


def make_client(address: str, token: str, *, timeout: float) -> Any:
    import hvac

    return hvac.Client(url=address, token=token, timeout=timeout)


def ensure_transit_key(client: Any, *, mount: str, name: str, key_type: str) -> None:
    """Create the Transit key when it does not exist (an existing key is left as it is)."""
    import hvac.exceptions

    try:
        client.secrets.transit.read_key(name=name, mount_point=mount)
    except hvac.exceptions.InvalidPath:
        client.secrets.transit.create_key(name=name, key_type=key_type, mount_point=mount)
