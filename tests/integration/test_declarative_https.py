"""Git over https with a token: a real smart-HTTP server (dulwich's WSGI app) behind TLS and
basic auth, on a loopback port, fetched by the reconciler's source."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dulwich.server import DictBackend
from dulwich.web import make_wsgi_chain

from tests.support.gitrepo import GitRepo, members_doc
from userorg.declarative.source import GitSource, SourceError

TOKEN = "ghs_test_token_123"


def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Quiet(WSGIRequestHandler):
    def log_message(self, *_args: Any) -> None:
        return None


@pytest.fixture
def https_repo(tmp_path: Path) -> Iterator[tuple[str, GitRepo, Path]]:
    repo = GitRepo(tmp_path / "served")
    repo.write({"orgs/acme/members.yaml": members_doc({"a@example.com": ["OrgOwner"]})})
    git_app = make_wsgi_chain(DictBackend({"/config.git": repo.repo}))
    expected = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_AUTHORIZATION") != expected:
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"')])
            return [b"unauthorized"]
        return git_app(environ, start_response)

    cert, key = _certificate(tmp_path)
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_port}/config.git", repo, cert
    finally:
        server.shutdown()
        server.server_close()


def test_https_fetch_with_a_token_and_incremental_updates(
    https_repo: tuple[str, GitRepo, Path], tmp_path: Path
) -> None:
    url, repo, cert = https_repo
    source = GitSource(cache_dir=tmp_path / "cache", token=TOKEN, ca_bundle=cert, timeout=10)
    head = source.head(url, "main")
    assert head.commit_id == repo.head
    assert set(source.read_folder(url, head.commit_id, "orgs/acme")) == {"members.yaml"}
    first = head.commit_id
    second = repo.write({"orgs/acme/members.yaml": members_doc({"b@example.com": ["OrgOwner"]})})
    # A fetch that started after not_before answers (orgs sharing a repository share it)...
    assert source.head(url, "main", not_before=0).commit_id == first
    # ...a newer request (a webhook's) fetches again, incrementally into the same mirror.
    fresh = source.head(url, "main", not_before=time.time())
    assert fresh.commit_id == second
    assert source.is_ancestor(url, first, second)
    assert b"b@example.com" in source.read_folder(url, second, "orgs/acme")["members.yaml"]


def test_https_failures_are_precise(https_repo: tuple[str, GitRepo, Path], tmp_path: Path) -> None:
    url, _repo, cert = https_repo
    wrong = GitSource(cache_dir=tmp_path / "c1", token="wrong", ca_bundle=cert, timeout=10)
    with pytest.raises(SourceError) as caught:
        wrong.head(url, "main")
    assert caught.value.code == "auth_failed"
    untrusted = GitSource(cache_dir=tmp_path / "c2", token=TOKEN, timeout=10)
    with pytest.raises(SourceError) as caught:
        untrusted.head(url, "main")
    assert caught.value.code == "repo_unreachable"
    good = GitSource(cache_dir=tmp_path / "c3", token=TOKEN, ca_bundle=cert, timeout=10)
    with pytest.raises(SourceError) as caught:
        good.head(url, "no-such-branch")
    assert caught.value.code == "branch_not_found"
    local = GitSource(cache_dir=tmp_path / "c4", allow_local=False)
    with pytest.raises(SourceError) as caught:
        local.head(f"file://{tmp_path}", "main")
    assert caught.value.code == "local_repo_not_allowed"
