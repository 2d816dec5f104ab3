"""A second, independent STS implementation: moto's server over real HTTP. It checks no
MFA code and no duration, so it only proves protocol compatibility; the strict double
covers the rules."""

from __future__ import annotations

import json
import urllib.request

from pathlib import Path
from collections.abc import Iterator

import boto3
import pytest

from rolebroker.broker.clock import SystemClock
from rolebroker.broker.config import ConfigFiles
from rolebroker.broker.server import Daemon, DaemonSettings
from rolebroker.clients.daemon_client import DaemonClient
from tests.harness import serve_in_thread

moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the test extra")


@pytest.fixture
def moto_sts() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_login_and_role_credentials_through_moto(tmp_path: Path, moto_sts: str) -> None:
    (tmp_path / "credentials").write_text(
        "[alice]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
        "mfa_serial = arn:aws:iam::123456789012:mfa/alice\n")
    (tmp_path / "config").write_text(
        f"[profile alice]\nregion = us-east-1\nendpoint_url = {moto_sts}\n\n"
        f"[profile dev]\nrole_arn = arn:aws:iam::123456789012:role/dev\nsource_profile = alice\n"
        f"region = us-east-1\nendpoint_url = {moto_sts}\n")
    files = ConfigFiles(str(tmp_path / "config"), str(tmp_path / "credentials"))
    daemon = Daemon(DaemonSettings(files, tmp_path / "run", tmp_path / "state", port=0), clock=SystemClock())
    loop, thread = serve_in_thread(daemon)
    try:
        control = DaemonClient(tmp_path / "run")
        result = control.request("POST", "/v1/login", {"profile": "dev", "code": "123456"})
        assert result["warm_error"] is None and "dev" in result["profiles"]
        token = control.request("POST", "/v1/tokens", {"profiles": ["dev"]})["token"]
        request = urllib.request.Request(f"http://127.0.0.1:{daemon.port}/v1/credentials/dev",
                                         headers={"Authorization": token})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.loads(response.read())
        sts = boto3.client("sts", endpoint_url=moto_sts, region_name="us-east-1",
                           aws_access_key_id=body["AccessKeyId"], aws_secret_access_key=body["SecretAccessKey"],
                           aws_session_token=body["Token"])
        assert ":assumed-role/dev/" in sts.get_caller_identity()["Arn"]
    finally:
        daemon.stop()
        thread.join(10)
        loop.close()
