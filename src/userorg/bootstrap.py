"""First start: create the platform admin, never overwriting an existing one."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from userorg.audit import recorder as audit
from userorg.container import Container
from userorg.context import Actor
from userorg.db import utcnow
from userorg.users.models import User

DEFAULT_ADMIN_EMAIL = "admin@userorg.local"


@dataclass(frozen=True)
class BootstrapResult:
    created: bool
    email: str | None
    generated_password: str | None = None


async def ensure_platform_admin(container: Container) -> BootstrapResult:
    settings = container.settings
    async with container.uow() as uow:
        existing = (
            await uow.session.execute(
                select(User.email).where(User.is_platform_admin.is_(True)).limit(1)
            )
        ).scalar_one_or_none()
        if existing is not None:
            return BootstrapResult(False, existing)
    email = (settings.bootstrap_admin_email or DEFAULT_ADMIN_EMAIL).strip().lower()
    generated = None
    if settings.bootstrap_admin_password is not None:
        password = settings.bootstrap_admin_password.get_secret_value()
        container.passwords.check_rules(password, email=email)
    else:
        generated = password = secrets.token_urlsafe(18)
    try:
        async with container.uow() as uow:
            user = (
                await uow.session.execute(select(User).where(User.email == email))
            ).scalar_one_or_none()
            if user is None:
                user = User(email=email, display_name="Platform admin")
                uow.session.add(user)
            user.is_platform_admin = True
            user.password_hash = await container.passwords.hash(password)
            user.password_changed_at = utcnow()
            await uow.session.flush()
            await audit.record(
                uow.session,
                action="system:user:bootstrap_admin",
                actor=Actor.system("bootstrap"),
                org_id=None,
                target_type="user",
                target_id=user.id,
                metadata={"email": email},
            )
    except sa_exc.IntegrityError:
        return BootstrapResult(False, email)  # another replica won the race
    return BootstrapResult(True, email, generated)


def announce(result: BootstrapResult) -> None:
    """Print the one-time credentials of a generated admin, once, to the console."""
    if not result.created:
        return
    if result.generated_password is None:
        print(f"userorg: created platform admin {result.email}", flush=True)
        return
    line = "=" * 72
    print(
        f"{line}\nuserorg: created the platform admin. These credentials are shown ONCE:\n"
        f"  email:    {result.email}\n  password: {result.generated_password}\n"
        f"Sign in: POST /v1/auth/login, then change the password.\n{line}",
        flush=True,
    )
