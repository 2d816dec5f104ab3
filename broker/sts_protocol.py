"""STS's Query protocol as real STS speaks it, for the STS double (sts_double.py): a request
read off HTTP, the XML of answers and errors, and the wording of parameter errors.

Standard library only, like the double (the demo embeds both).
"""

from __future__ import annotations

import logging
import re
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, cast
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

from .sts_world import IssuedCredential, SignedRequest

log = logging.getLogger("rolebroker.sts_double")

NS = "https://sts.amazonaws.com/doc/2011-06-15/"
_QUERY_RE = re.compile(r"\?\S*")

INVALID_CODE = "MultiFactorAuthentication failed with invalid MFA one time pass code. "
BAD_SERIAL = ("MultiFactorAuthentication failed, unable to validate MFA code. Please verify your MFA serial "
              "number is valid and associated with this user.")


class StsError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def validation(message: str) -> StsError:
    return StsError(400, "ValidationError", message)


def constraint(shown: str, name: str, rule: str) -> StsError:
    """The wording real STS uses for a parameter that fails its model constraint."""
    return validation(f"1 validation error detected: Value {shown} at '{name}' failed to satisfy "
                      f"constraint: Member must {rule}")


def duration_param(params: dict[str, str], default: int, low: int, high: int) -> int:
    """DurationSeconds, checked as STS checks it."""
    raw = params.get("DurationSeconds")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise constraint(f"'{raw[:32]}'", "durationSeconds", "be an integer") from None
    if value < low:
        raise constraint(f"'{value}'", "durationSeconds", f"have value greater than or equal to {low}")
    if value > high:
        raise constraint(f"'{value}'", "durationSeconds", f"have value less than or equal to {high}")
    return value


def element(tag: str, text: str) -> str:
    return f"<{tag}>{escape(text)}</{tag}>"


def credentials_xml(cred: IssuedCredential) -> str:
    # Truncated to whole seconds, so clients see expiry no later than the double enforces it.
    expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cred.expiration))
    return ("<Credentials>" + element("AccessKeyId", cred.access_key_id)
            + element("SecretAccessKey", cred.secret_access_key) + element("SessionToken", cred.session_token)
            + element("Expiration", expiration) + "</Credentials>")


def success_body(action: str, result: str, request_id: str) -> str:
    return (f'<{action}Response xmlns="{NS}"><{action}Result>{result}</{action}Result>'
            f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
            f"</{action}Response>")


def error_body(err: StsError, request_id: str) -> str:
    return (f'<ErrorResponse xmlns="{NS}"><Error><Type>{"Receiver" if err.status >= 500 else "Sender"}'
            f'</Type>{element("Code", err.code)}{element("Message", err.message)}</Error>'
            f"<RequestId>{request_id}</RequestId></ErrorResponse>")


class Answers(Protocol):
    def answer(self, form: dict[str, str], authorization: str | None, token: str | None,
               signed: SignedRequest | None = None) -> tuple[int, bytes, str] | None:
        """(status, body, request id) for one request, or None: close without an answer."""


class StsServer(ThreadingHTTPServer):
    double: Answers


class StsHttpHandler(BaseHTTPRequestHandler):
    # One request per connection: no idle keep-alive thread can outlive stop(), which joins them.
    protocol_version = "HTTP/1.0"
    # A client that connects and never sends must not pin a handler thread (and stop()) forever.
    timeout = 10.0

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        raw = self.rfile.read(length) if length > 0 else b""
        body = raw.decode("utf-8", "replace")
        form = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        form.update(parse_qsl(body, keep_blank_values=True))
        double = cast(StsServer, self.server).double
        signed = SignedRequest(self.command, self.path, tuple(self.headers.items()), raw)
        reply = double.answer(form, self.headers.get("Authorization"), self.headers.get("X-Amz-Security-Token"),
                              signed)
        if reply is None:  # a released "timeout": the client gets no answer, only a closed connection
            self.close_connection = True
            return
        status, payload, request_id = reply
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-amzn-RequestId", request_id)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed by the base class
        # Not stderr, as the base class does; and no query string: a presigned URL carries a session token.
        log.debug("sts-double http: %s", _QUERY_RE.sub("?...", format % args))
