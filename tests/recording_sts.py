"""A recording STS for the config oracle: the strict STS double, plus a log of every request
as it arrived (action, parameters, signing key, session token, Host and path), and an HTTPS
proxy in front of it that answers for the real AWS host names.

The proxy is how both botocore and rolebroker reach "sts.us-gov-west-1.amazonaws.com" without
leaving the machine: with HTTPS_PROXY pointing at it, each side computes its own endpoint and
sends a real TLS request there; the proxy accepts the CONNECT for any host, terminates TLS
with a certificate for that name from a throwaway CA (AWS_CA_BUNDLE), and pipes the request to
the double on loopback. It never opens a connection anywhere else.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rolebroker.broker import sts_protocol
from rolebroker.broker.sts_double import StsDouble
from rolebroker.broker.sts_world import IamUser, Role, SignedRequest
from tests.relay import pump


@dataclass(frozen=True)
class Request:
    """One STS request as it arrived. Secrets stay out of the repr."""

    action: str
    params: dict[str, str] = field(hash=False)
    key_id: str
    token: str | None = field(repr=False)
    host: str
    path: str
    status: int

    def __repr__(self) -> str:
        # A refused code may still be valid for its 30 s window: masked, as StsCall does.
        shown = {k: ("******" if k == "TokenCode" else v) for k, v in self.params.items()}
        return (f"Request(action={self.action!r}, params={shown!r}, key_id={self.key_id!r}, "
                f"token={'set' if self.token else None}, host={self.host!r}, path={self.path!r}, "
                f"status={self.status!r})")


class _RecordingHandler(sts_protocol.StsHttpHandler):
    def _serve(self) -> None:
        server: Any = self.server
        server.double.request_context.host = self.headers.get("Host", "")
        server.double.request_context.path = self.path.split("?", 1)[0]
        super()._serve()


class RecordingSts(StsDouble):
    """StsDouble that logs each request with its Host, path and X-Amz-Security-Token."""

    def __init__(self, users: list[IamUser], roles: list[Role], now: Callable[[], float]) -> None:
        super().__init__(users, roles, now=now)
        self.requests: list[Request] = []
        self.request_context = threading.local()
        self._one_at_a_time = threading.Lock()

    def start(self) -> RecordingSts:
        if self._server is not None or self._stopped:
            raise RuntimeError("RecordingSts can be started once")
        server = sts_protocol.StsServer(self._address, _RecordingHandler)
        server.double = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="recording-sts", daemon=True)
        self._thread.start()
        return self

    def answer(self, form: dict[str, str], authorization: str | None,
                token: str | None, signed: SignedRequest | None = None) -> tuple[int, bytes, str] | None:
        with self._one_at_a_time:  # so the call the double logs is this request's
            before = len(self.calls)
            reply = super().answer(form, authorization, token, signed)
            with self._lock:
                call = self.calls[before] if len(self.calls) > before else None
                if call is not None:
                    self.requests.append(Request(call.action, dict(call.params), call.caller_access_key_id, token,
                                                 getattr(self.request_context, "host", ""),
                                                 getattr(self.request_context, "path", ""), call.status))
            return reply

    def take(self) -> list[Request]:
        """The requests so far, and a clean log for the next side."""
        with self._lock:
            taken, self.requests = self.requests, []
            self.calls.clear()
            return taken

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])


class _Authority:
    """A throwaway CA that signs a certificate for whatever host a client asks for (SNI)."""

    def __init__(self, directory: Path) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rolebroker test CA")])
        now = dt.datetime.now(dt.UTC)
        self._name = name
        self.certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.directory = directory
        self.bundle = directory / "ca.pem"
        self.bundle.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def context_for(self, host: str) -> ssl.SSLContext:
        with self._lock:
            if host not in self._contexts:
                self._contexts[host] = self._make(host)
            return self._contexts[host]

    def _make(self, host: str) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self._name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
            .sign(self._key, hashes.SHA256())
        )
        stem = self.directory / host
        stem.with_suffix(".crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        stem.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(stem.with_suffix(".crt"), stem.with_suffix(".key"))
        return context


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    authority: _Authority
    backend: tuple[str, int]
    tunnels: list[str]


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10.0

    def do_CONNECT(self) -> None:  # noqa: N802 - the name http.server dispatches to
        server: Any = self.server
        host = self.path.rsplit(":", 1)[0]
        server.tunnels.append(host)
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        try:
            client = server.authority.context_for(host).wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            self.close_connection = True
            return
        # Always the double on loopback, whatever host was asked for.
        with client, socket.create_connection(server.backend, timeout=10) as backend:
            upstream = threading.Thread(target=pump, args=(client, backend), daemon=True)
            upstream.start()
            pump(backend, client)
            upstream.join(10)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - fixed by the base class
        return



class AwsHostsProxy:
    """An HTTPS proxy on loopback that lets clients reach any AWS host name, all of them
    answered by one local STS double. `environment()` gives what both sides need."""

    def __init__(self, backend_port: int) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="rolebroker-ca-")
        self.authority = _Authority(Path(self._directory.name))
        server = _ProxyServer(("127.0.0.1", 0), _ProxyHandler)
        server.authority = self.authority
        server.backend = ("127.0.0.1", backend_port)
        server.tunnels = []
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="aws-hosts-proxy", daemon=True)
        self._thread.start()

    @property
    def tunnels(self) -> list[str]:
        return self._server.tunnels

    def environment(self) -> dict[str, str]:
        url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return {"HTTPS_PROXY": url, "https_proxy": url, "AWS_CA_BUNDLE": str(self.authority.bundle),
                # Loopback endpoints (a `services` endpoint_url) are reached directly.
                "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
                "HTTP_PROXY": "", "http_proxy": ""}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
        self._directory.cleanup()
