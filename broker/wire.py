"""The container-credentials wire format, in one place (see docs/SDK-COMPATIBILITY.md)."""

from __future__ import annotations

import json

from .models import Credentials

JSON_TYPE = b"application/json"


def credentials_body(credentials: Credentials, role_arn: str | None = None) -> bytes:
    """Serialized once per refresh, then served as bytes on every request."""
    body: dict[str, str] = {
        "AccessKeyId": credentials.access_key_id,
        "SecretAccessKey": credentials.secret_access_key,
        "Token": credentials.session_token,
        "Expiration": credentials.expiration_iso(),
    }
    if credentials.account_id:
        body["AccountId"] = credentials.account_id
    if role_arn:
        body["RoleArn"] = role_arn
    return json.dumps(body, separators=(",", ":")).encode()


Message = dict[str, object]


def response_messages(status: int, body: bytes) -> tuple[Message, Message]:
    """The two ASGI messages of a JSON answer. For credentials they are built once per
    refresh and sent as they are on every request (the server only reads them)."""
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", JSON_TYPE),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


def error_body(code: str, message: str) -> bytes:
    # Lower-case for Go and botocore, capitalised so the JS SDK attaches them too.
    return json.dumps({"code": code, "message": message, "Code": code, "Message": message}).encode()
