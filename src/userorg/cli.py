"""The ``userorg`` command: both processes and the operator tools."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from userorg.settings import Mode, Settings, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="User & Organization Service")
audit_app = typer.Typer(no_args_is_help=True, help="Audit trail tools")
app.add_typer(audit_app, name="audit")
declarative_app = typer.Typer(no_args_is_help=True, help="Declarative (Git) configuration tools")
app.add_typer(declarative_app, name="declarative")
policy_app = typer.Typer(no_args_is_help=True, help="Authorization policy tools")
app.add_typer(policy_app, name="policy")
dev_app = typer.Typer(
    no_args_is_help=True, help="The local production-mode stack (make dev-up / dev-down)"
)
app.add_typer(dev_app, name="dev")


def _settings() -> Settings:
    settings = load_settings()
    from userorg.telemetry.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    return settings


def _check_bootstrap_password(settings: Settings) -> None:
    """A weak bootstrap password fails the start with one line, before anything runs."""
    if settings.bootstrap_admin_password is None:
        return
    from userorg.authn.passwords import PasswordService
    from userorg.errors import ValidationFailed

    rules = PasswordService(
        time_cost=1, memory_kib=1024, parallelism=1, min_length=settings.password_min_length
    )
    try:
        rules.check_rules(
            settings.bootstrap_admin_password.get_secret_value(),
            email=settings.bootstrap_admin_email,
        )
    except ValidationFailed as error:
        problems = ", ".join(error.details.get("problems", []))
        typer.echo(f"configuration error: USER_ORG_BOOTSTRAP_ADMIN_PASSWORD: {problems}", err=True)
        raise typer.Exit(2) from None


def _migrate_embedded(settings: Settings) -> None:
    if settings.mode is Mode.EMBEDDED:
        from userorg import migrate

        migrate.upgrade(
            settings.effective_database_url, lock_path=settings.data_dir / "migrate.lock"
        )


STARTUP_DATABASE_TIMEOUT_SECONDS = 15.0


def _database_target(url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return str(parsed.database)
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def _require_schema_at_head(settings: Settings) -> None:
    """Also the start's database check: unreachable or refusing, one line and exit 2."""
    from userorg import migrate

    async def current() -> str | None:
        async with asyncio.timeout(STARTUP_DATABASE_TIMEOUT_SECONDS):
            return await migrate.current_revision(settings.effective_database_url)

    try:
        current_revision = asyncio.run(current())
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        typer.echo(
            f"cannot reach the database at {_database_target(settings.effective_database_url)} "
            f"(USER_ORG_DATABASE_URL): {type(error).__name__}{': ' + reason if reason else ''}",
            err=True,
        )
        raise typer.Exit(2) from None
    _check_revision(current_revision)


def _check_revision(current: str | None) -> None:
    from userorg import migrate

    head = migrate.head_revision()
    if current != head:
        typer.echo(
            f"database schema is at {current or 'nothing'}, this release needs {head}: "
            "run `userorg migrate` first",
            err=True,
        )
        raise typer.Exit(2)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        typer.echo(f"cannot listen on {host}:{port}: {error.strerror}", err=True)
        raise typer.Exit(2) from None
    sock.set_inheritable(True)
    return sock


def _serve(asgi_app: object, host: str, port: int, *, extra_ports: tuple[int, ...] = ()) -> None:
    import uvicorn

    config = uvicorn.Config(
        asgi_app,  # type: ignore[arg-type]
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        server_header=False,
        date_header=False,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=20,
    )
    # Everything imported and built so far lives as long as the process: move it out of the
    # cyclic collector's sight. Full collections then scan only what requests allocate
    # (measured: ~300 ms pauses without this on the gateway hot path, see performance.md).
    gc.collect()
    gc.freeze()
    if not extra_ports:
        uvicorn.Server(config).run()
        return
    # One process, several listeners (USER_ORG_GATEWAY_PORT): the app tells them apart.
    sockets = [_listen(host, listen_port) for listen_port in (port, *extra_ports)]
    uvicorn.Server(config).run(sockets=sockets)


@app.command()
def serve() -> None:
    """Run the admin-api (default port 8081)."""
    settings = _settings()
    _check_bootstrap_password(settings)
    _migrate_embedded(settings)
    _require_schema_at_head(settings)
    _check_policies(settings)
    _check_vault(settings)
    from userorg.main import create_app

    extra = (settings.gateway_port,) if settings.gateway_port is not None else ()
    _serve(create_app(settings), settings.bind_host, settings.admin_api_port, extra_ports=extra)


def _check_vault(settings: Settings) -> None:
    """When the keystore or the audit signer is Vault/OpenBao, its token must work: checked
    before anything starts, so a wrong token or address is one line, not a failed lifespan."""
    if settings.keystore != "vault" and settings.effective_audit_signer != "vault":
        return
    import hvac.exceptions
    import requests

    from userorg.platform.vault import make_client

    address = str(settings.vault_addr)
    token = settings.vault_token.get_secret_value() if settings.vault_token else ""
    client = make_client(address, token, timeout=settings.vault_timeout_seconds)
    try:
        client.auth.token.lookup_self()
    except hvac.exceptions.Forbidden:
        typer.echo(
            f"configuration error: USER_ORG_VAULT_TOKEN: {address} refused the token "
            "(permission denied: wrong, expired or revoked)",
            err=True,
        )
        raise typer.Exit(2) from None
    except (requests.RequestException, hvac.exceptions.VaultError) as error:
        typer.echo(
            f"cannot reach Vault at {address} (USER_ORG_VAULT_ADDR): {type(error).__name__}",
            err=True,
        )
        raise typer.Exit(2) from None


def _check_policies(settings: Settings) -> None:
    """Policies that cannot serve stop the start with one line (fail closed)."""
    if settings.opa_url:
        return
    from userorg.authz.policyset import PolicyLoadError, load_policy_set
    from userorg.container import policy_config

    try:
        load_policy_set(settings.effective_policy_dir, policy_config(settings))
    except PolicyLoadError as error:
        typer.echo(f"configuration error: USER_ORG_POLICY_DIR: {error.message}", err=True)
        raise typer.Exit(2) from None


@app.command()
def reconcile() -> None:
    """Run the reconciler (health, readiness and metrics on port 8082)."""
    settings = _settings()
    _migrate_embedded(settings)
    _require_schema_at_head(settings)
    _check_vault(settings)
    from userorg.reconciler.app import create_reconciler_app

    _serve(create_reconciler_app(settings), settings.bind_host, settings.reconciler_port)


@app.command()
def run() -> None:
    """Run both processes (admin-api and reconciler) until interrupted: what `make run` does."""
    settings = _settings()
    _migrate_embedded(settings)
    exe = [sys.executable, "-m", "userorg"]
    children = [subprocess.Popen([*exe, command]) for command in ("serve", "reconcile")]  # noqa: S603

    def stop(_signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while all(child.poll() is None for child in children):
            with contextlib.suppress(subprocess.TimeoutExpired):
                children[0].wait(timeout=0.5)
    finally:
        stop(signal.SIGTERM, None)
        codes = [child.wait() for child in children]
    raise typer.Exit(max(abs(code) for code in codes) if any(codes) else 0)


@app.command()
def migrate(revision: Annotated[str, typer.Option(help="Target revision")] = "head") -> None:
    """Upgrade the database schema (production: run before starting a new release)."""
    settings = _settings()
    from userorg import migrate as migrations

    migrations.upgrade(settings.effective_database_url, revision)
    typer.echo(f"database at {revision}")


@app.command()
def rollback(revision: Annotated[str, typer.Option(help="Target revision")] = "-1") -> None:
    """Downgrade the database schema by one revision (or to --revision)."""
    settings = _settings()
    from userorg import migrate as migrations

    migrations.downgrade(settings.effective_database_url, revision)
    typer.echo(f"database rolled back to {revision}")


@app.command("schema-drift")
def schema_drift(
    database_url: Annotated[
        str | None, typer.Option(help="An empty throwaway database (default: a temp SQLite file)")
    ] = None,
) -> None:
    """Exit 1 when the models and the migrations disagree."""
    import tempfile

    from userorg import migrate as migrations

    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{tmp}/drift.db"
        diffs = asyncio.run(migrations.schema_drift(url))
    if diffs:
        typer.echo("schema drift between models and migrations:", err=True)
        for diff in diffs:
            typer.echo(f"  {diff}", err=True)
        raise typer.Exit(1)
    typer.echo("no schema drift")


@app.command()
def bootstrap() -> None:
    """Create the platform admin when none exists (never overwrites one)."""
    settings = _settings()
    _check_bootstrap_password(settings)
    _migrate_embedded(settings)
    from userorg.bootstrap import announce, ensure_platform_admin
    from userorg.container import Container

    async def go() -> None:
        container = Container(settings)
        try:
            result = await ensure_platform_admin(container)
        finally:
            await container.engine.dispose()
        if not result.created:
            typer.echo(f"a platform admin already exists ({result.email}); nothing changed")
        announce(result)

    asyncio.run(go())


@app.command("seed-demo")
def seed_demo(
    scale: Annotated[
        bool,
        typer.Option("--scale", help="The scale target: 20,000 orgs, 200,000 users, 500,000 keys"),
    ] = False,
    orgs: Annotated[
        int | None, typer.Option(help="Organizations (default 20, --scale 20,000)")
    ] = None,
    users: Annotated[int | None, typer.Option(help="Users (default 200, --scale 200,000)")] = None,
    keys: Annotated[
        int | None, typer.Option(help="API keys (default 500, --scale 500,000)")
    ] = None,
    prefix: Annotated[str, typer.Option(help="Slug prefix of the demo orgs")] = "demo",
    secrets_file: Annotated[
        Path | None,
        typer.Option(help="Write the secrets of a sample of usable keys here (mode 0600)"),
    ] = None,
    sample: Annotated[int, typer.Option(help="How many secrets --secrets-file keeps")] = 10_000,
    password: Annotated[
        str | None, typer.Option(help="The seeded users' password (default: a documented demo one)")
    ] = None,
) -> None:
    """Load demo orgs, users, service accounts and API keys into PostgreSQL (bulk COPY)."""
    settings = _settings()
    from userorg import demo

    sizes = dict(demo.SCALE if scale else demo.SMALL)
    for name, value in (("orgs", orgs), ("users", users), ("keys", keys)):
        if value is not None:
            sizes[name] = value
    if settings.mode is not Mode.PRODUCTION or settings.is_sqlite:
        typer.echo(
            "seed-demo loads PostgreSQL: run it in production mode (USER_ORG_MODE=production, "
            "USER_ORG_DATABASE_URL=postgresql://...)",
            err=True,
        )
        raise typer.Exit(2)
    _require_schema_at_head(settings)
    from userorg.authn.passwords import PasswordService
    from userorg.errors import ValidationFailed

    passwords = PasswordService(
        time_cost=settings.argon2_time_cost,
        memory_kib=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        min_length=settings.password_min_length,
    )
    chosen = password or demo.DEFAULT_PASSWORD
    try:
        passwords.check_rules(chosen)
    except ValidationFailed as error:
        typer.echo(f"--password: {', '.join(error.details.get('problems', []))}", err=True)
        raise typer.Exit(2) from None
    password_hash = asyncio.run(passwords.hash(chosen))
    try:
        report = asyncio.run(
            demo.seed(
                settings.effective_database_url,
                orgs=sizes["orgs"],
                users=sizes["users"],
                keys=sizes["keys"],
                environment=settings.api_key_environment,
                prefix=prefix,
                password_hash=password_hash,
                secrets_file=secrets_file,
                sample=sample,
                progress=lambda message: typer.echo(f"  loading {message}", err=True),
            )
        )
    except demo.SeedError as error:
        typer.echo(f"seed-demo: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"seeded {report.orgs:,} orgs, {report.users:,} users ({report.memberships:,} "
        f"memberships, {report.role_assignments:,} role assignments), "
        f"{report.service_accounts:,} service accounts, {report.api_keys:,} API keys "
        f"in {report.seconds:.1f} s"
    )
    largest = report.largest_org
    typer.echo(
        f"largest org {largest['slug']} ({largest['orgId']}): {largest['members']:,} members, "
        f"{largest['apiKeys']:,} keys, {largest['serviceAccounts']:,} service accounts"
    )
    if secrets_file is not None:
        typer.echo(f"wrote {report.sampled_secrets:,} usable key secrets to {secrets_file}")


@app.command()
def openapi(
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout")] = None,
) -> None:
    """Print (or write) the OpenAPI document generated from the code."""
    os.environ.setdefault("USER_ORG_LOG_LEVEL", "warning")
    from userorg.contract import render_openapi_yaml

    text = render_openapi_yaml()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output}")


@audit_app.command("verify-db")
def audit_verify_db(chain: Annotated[str, typer.Argument(help="Org id or 'platform'")]) -> None:
    """Verify a stored hash chain in the database and name the first bad event."""
    settings = _settings()
    from userorg.audit.service import verify_checkpoint, verify_stored_chain
    from userorg.container import Container

    async def go() -> bool:
        container = Container(settings)
        try:
            async with container.session_factory() as session:
                result = await verify_stored_chain(session, chain_id=chain)
                checkpoint_ok = await verify_checkpoint(
                    session, signer=container.audit_signer, chain_id=chain
                )
        finally:
            await container.engine.dispose()
        if checkpoint_ok is False:
            typer.echo(f"chain {chain}: its retention checkpoint's signature is INVALID", err=True)
            return False
        if checkpoint_ok:
            typer.echo(f"chain {chain}: starts at a valid signed retention checkpoint")
        if result.ok:
            typer.echo(f"chain {chain}: {result.events_checked} events verified")
        else:
            typer.echo(
                f"chain {chain}: FAILED at event {result.first_bad_event_id} "
                f"(seq {result.first_bad_seq}): {result.reason}",
                err=True,
            )
        return result.ok

    if not asyncio.run(go()):
        raise typer.Exit(1)


@declarative_app.command("plan")
def declarative_plan(
    directory: Annotated[Path, typer.Argument(help="An org folder, or a folder of org folders")],
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="Baseline: a directory, or a Git repository (path, file://, https://)",
        ),
    ] = None,
    branch: Annotated[str, typer.Option(help="Branch of the --against repository")] = "main",
    path: Annotated[
        str, typer.Option(help="Folder of the org folders inside the --against repository")
    ] = ".",
    prune: Annotated[bool, typer.Option(help="Plan deletions as the reconciler would")] = False,
    output_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Print the plan offline. Exit 0: no change, 2: changes, 1: invalid configuration."""
    from userorg.declarative.offline import EXIT_INVALID, plan_directory, render

    settings = Settings()
    try:
        result = plan_directory(
            directory,
            against=against,
            branch=branch,
            path=path,
            prune=prune,
            max_removal_fraction=settings.declarative_max_removal_fraction,
            max_file_bytes=settings.declarative_max_file_bytes,
        )
    except (FileNotFoundError, NotADirectoryError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    typer.echo(render(result, as_json=output_json))
    for plan in result.plans:
        for problem in plan.errors:
            typer.echo(problem.render(), err=True)
    raise typer.Exit(result.exit_code)


@declarative_app.command("schema")
def declarative_schema(
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout")] = None,
) -> None:
    """Print (or write) the JSON Schema of the declarative YAML format."""
    import json

    from userorg.declarative.schema import json_schema

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output}")


@audit_app.command("verify")
def audit_verify(
    export: Annotated[Path, typer.Argument(help="The export file (NDJSON)")],
    signature: Annotated[
        Path | None, typer.Option("--signature", help="Detached signature (64 raw bytes)")
    ] = None,
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            help="Ed25519 public key (PEM); repeat to pass rotated keys (e.g. a checkpoint's)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Verify an export offline: signature, hash chain, continuity. Exit 0 ok, 1 tampered,
    2 unusable input."""
    import orjson

    from userorg.audit.signing import load_public_key
    from userorg.audit.verify import VerifyUsageError, verify_export

    def usage(message: str) -> typer.Exit:
        typer.echo(f"error: {message}", err=True)
        return typer.Exit(2)

    keys = []
    for path in public_key or []:
        try:
            keys.append(load_public_key(path.read_bytes()))
        except OSError as error:
            raise usage(f"cannot read public key {path}: {error.strerror}") from None
        except ValueError as error:
            raise usage(f"{path} is not an Ed25519 public key in PEM: {error}") from None
    signature_bytes = None
    if signature is not None:
        try:
            signature_bytes = signature.read_bytes()
        except OSError as error:
            raise usage(f"cannot read signature {signature}: {error.strerror}") from None
    if signature_bytes is not None and not keys:
        raise usage("--signature needs --public-key to check it")
    try:
        report = verify_export(export, signature=signature_bytes, public_keys=keys)
    except VerifyUsageError as error:
        raise usage(str(error)) from None
    if as_json:
        typer.echo(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        header = report.header
        typer.echo(
            f"export {header.get('exportId')} of chain {header.get('chainId')}: "
            f"{report.events} events, sha256 {report.sha256}"
        )
        if report.signature_ok is not None:
            typer.echo(
                f"signature: {'valid' if report.signature_ok else 'INVALID'} (key {report.key_id})"
            )
        if report.checkpoint_ok is not None:
            typer.echo(f"checkpoint: {'valid' if report.checkpoint_ok else 'INVALID'}")
        if report.problem is None:
            typer.echo(
                f"chain: intact, seq {header.get('firstSeq')}..{header.get('lastSeq')}, no gaps"
            )
        else:
            problem = report.problem
            where = f"line {problem.line}"
            if problem.event_id is not None:
                where += f", event {problem.event_id}, seq {problem.seq}"
            typer.echo(f"chain: FAILED at {where}: {problem.kind}: {problem.message}", err=True)
            if problem.related_event_id is not None:
                typer.echo(
                    f"chain: also suspect: line {problem.related_line}, event "
                    f"{problem.related_event_id}",
                    err=True,
                )
        for note in report.notes:
            typer.echo(f"note: {note}", err=True)
        typer.echo("VERIFIED" if report.ok else "VERIFICATION FAILED", err=not report.ok)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("rotate-signing-key")
def audit_rotate_signing_key() -> None:
    """Start signing exports with a new key; the old public key stays published (retired)."""
    settings = _settings()
    from userorg.container import Container

    async def go() -> None:
        container = Container(settings)
        try:
            await container.audit_signer.start()
            key = await container.audit_signer.rotate()
        finally:
            await container.engine.dispose()
        typer.echo(f"new audit signing key {key.key_id} ({key.backend})")

    asyncio.run(go())


@policy_app.command("test")
def policy_test(
    directory: Annotated[
        Path | None, typer.Argument(help="Policy directory (default: USER_ORG_POLICY_DIR)")
    ] = None,
    run: Annotated[str | None, typer.Option(help="Only tests whose name matches")] = None,
    quiet: Annotated[bool, typer.Option(help="List failed tests only")] = False,
    min_coverage: Annotated[
        float, typer.Option(help="Fail below this line coverage (percent)")
    ] = 0.0,
    engine: Annotated[
        str, typer.Option(help="regorus (default) or opa (OPA's Go engine, if installed)")
    ] = "regorus",
) -> None:
    """Run the policy tests (test_* rules of *_test.rego) on regorus, with coverage."""
    from userorg.authz import testing

    folder = directory or Settings().effective_policy_dir
    report = testing.run(folder, pattern=run, engine_name=engine)
    typer.echo(testing.render(report, verbose=not quiet))
    if not report.ok:
        raise typer.Exit(1)
    if report.coverage_percent < min_coverage:
        typer.echo(
            f"coverage {report.coverage_percent:.1f}% is below {min_coverage:.1f}%", err=True
        )
        raise typer.Exit(1)


@policy_app.command("bundle")
def policy_bundle(
    output: Annotated[Path, typer.Option(help="Where to write the bundle (.tar.gz)")],
) -> None:
    """Build the OPA bundle (policies + data documents) for USER_ORG_OPA_URL deployments."""
    settings = load_settings()
    from userorg.authz.opa import build_bundle
    from userorg.authz.policyset import PolicyLoadError, load_policy_set
    from userorg.container import policy_config

    try:
        policy = load_policy_set(settings.effective_policy_dir, policy_config(settings))
    except PolicyLoadError as error:
        typer.echo(f"policy error: {error.message}", err=True)
        raise typer.Exit(1) from None
    output.write_bytes(build_bundle(policy))
    typer.echo(f"wrote {output} (revision {policy.revision})")


@app.command()
def healthcheck(
    port: Annotated[
        list[int] | None, typer.Option(help="Port(s) to try (default: admin-api, reconciler)")
    ] = None,
) -> None:
    """Exit 0 when this container's process answers /healthz (the image's HEALTHCHECK)."""
    import urllib.request

    ports = port or [
        int(os.environ.get("USER_ORG_ADMIN_API_PORT") or 8081),
        int(os.environ.get("USER_ORG_RECONCILER_PORT") or 8082),
    ]
    for candidate in ports:
        url = f"http://127.0.0.1:{candidate}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            continue
    typer.echo(f"no process answers /healthz on 127.0.0.1:{ports}", err=True)
    raise typer.Exit(1)


StateDir = Annotated[Path, typer.Option(help="Where pid files, logs and data live")]
EnvFile = Annotated[Path, typer.Option(help="The env file `make run` sources")]


@dev_app.command("up")
def dev_up(
    state_dir: StateDir = Path("var/dev"),
    env_file: EnvFile = Path(".env.dev"),
    database: Annotated[str, typer.Option(help="Database created for the stack")] = "userorg_dev",
    postgres_admin_url: Annotated[
        str, typer.Option(help="The machine's PostgreSQL, used when it answers")
    ] = "postgresql://postgres@127.0.0.1:5432/postgres",
    private_postgres: Annotated[
        bool, typer.Option(help="Start a private cluster even if the machine has a server")
    ] = False,
) -> None:
    """Start PostgreSQL, Redis, Kafka (tansu) and OpenBao; write the env file; migrate."""
    from userorg import devstack

    try:
        stack = devstack.up(
            state_dir=state_dir,
            env_file=env_file,
            database=database,
            postgres_admin_url=postgres_admin_url,
            private_postgres=private_postgres,
        )
    except devstack.AlreadyRunning as error:
        typer.echo(str(error))
        return
    except devstack.DevStackError as error:
        typer.echo(f"dev-up failed: {error}", err=True)
        raise typer.Exit(1) from None
    pg = stack.postgres
    typer.echo(f"postgres  {pg['mode']} server, database {pg['database']}")
    for name, service in stack.services.items():
        if name != "postgres":
            typer.echo(f"{name:<9} 127.0.0.1:{service.port} (pid {service.pid})")
    typer.echo(f"wrote {env_file}; `make run` now starts the service in production mode")
    typer.echo(
        f"sign in as {stack.env['USER_ORG_BOOTSTRAP_ADMIN_EMAIL']} with the password "
        f"in {env_file} (USER_ORG_BOOTSTRAP_ADMIN_PASSWORD)"
    )


@dev_app.command("down")
def dev_down(
    state_dir: StateDir = Path("var/dev"),
    purge: Annotated[
        bool, typer.Option(help="Also delete the stack's data (database, cluster, secrets)")
    ] = False,
    postgres_admin_url: Annotated[
        str | None, typer.Option(help="For --purge when the admin URL carries a password")
    ] = None,
) -> None:
    """Stop everything `dev up` started and remove the env file it wrote."""
    from userorg import devstack

    try:
        stopped = devstack.down(
            state_dir=state_dir, purge=purge, postgres_admin_url=postgres_admin_url
        )
    except devstack.DevStackError as error:
        typer.echo(f"dev-down: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@dev_app.command("status")
def dev_status(state_dir: StateDir = Path("var/dev")) -> None:
    """Which of the stack's processes are running (exit 1 when none is)."""
    from userorg import devstack

    recorded = devstack.load_stack(state_dir.resolve()).get("services", {})
    running = devstack.running_services(state_dir.resolve())
    for name, data in recorded.items():
        state = "running" if name in running else "stopped"
        typer.echo(f"{name:<9} {state:<8} 127.0.0.1:{data['port']} (pid {data['pid']})")
    if not running:
        typer.echo("the dev stack is not running")
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
