"""A local double of the AWS console federation endpoint (signin.aws.amazon.com/federation),
as strict as the real one about what it is given: the Session JSON must carry the
credentials of a role the STS double issued (sessionId / sessionKey / sessionToken), not
GetSessionToken credentials, and SessionDuration (900-43200) only for a role assumed with
long-term keys. It answers {"SigninToken": ...} and remembers every request it judged."""

from __future__ import annotations

import json
import secrets
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rolebroker.broker.sts_double import StsDouble
from rolebroker.broker.sts_world import IssuedCredential


@dataclass
class FederationCall:
    status: int
    reason: str
    session: dict[str, Any] = field(repr=False)
    session_duration: int | None
    credential: IssuedCredential | None = field(repr=False)
    token: str | None = field(default=None, repr=False)


class FederationDouble:
    def __init__(self, sts: StsDouble) -> None:
        self.sts = sts
        self.calls: list[FederationCall] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.double = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FederationDouble:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/federation"

    def judge(self, query: dict[str, str]) -> FederationCall:
        if query.get("Action") != "getSigninToken":
            return FederationCall(400, "unknown Action", {}, None, None)
        try:
            session = json.loads(query.get("Session", ""))
        except ValueError:
            return FederationCall(400, "Session is not JSON", {}, None, None)
        if not isinstance(session, dict) or set(session) != {"sessionId", "sessionKey", "sessionToken"}:
            return FederationCall(400, "Session needs exactly sessionId, sessionKey, sessionToken", {}, None, None)
        issued = {cred.access_key_id: cred for cred in self.sts.issued()}
        cred = issued.get(session["sessionId"])
        duration = int(query["SessionDuration"]) if "SessionDuration" in query else None
        if cred is None or cred.secret_access_key != session["sessionKey"] \
                or cred.session_token != session["sessionToken"]:
            return FederationCall(400, "credentials unknown or not matching", session, duration, cred)
        if cred.kind != "role":
            return FederationCall(400, "GetSessionToken credentials cannot sign in", session, duration, cred)
        if duration is not None and not cred.from_long_term_keys:
            return FederationCall(400, "SessionDuration with role-chaining credentials", session, duration, cred)
        if duration is not None and not 900 <= duration <= 43200:
            return FederationCall(400, "SessionDuration out of range", session, duration, cred)
        return FederationCall(200, "ok", session, duration, cred, secrets.token_urlsafe(48))


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        double: FederationDouble = self.server.double  # type: ignore[attr-defined]
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        call = double.judge(query) if parsed.path == "/federation" else FederationCall(404, "path", {}, None, None)
        with double._lock:
            double.calls.append(call)
        body = json.dumps({"SigninToken": call.token} if call.status == 200 else {"error": call.reason}).encode()
        self.send_response(call.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed by the base class
        pass  # the query string holds a secret key: never printed
