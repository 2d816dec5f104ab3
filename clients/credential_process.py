"""`rolebroker credential-process PROFILE`: the daemon's credentials in the shape of
botocore's `credential_process` (Version 1). It runs before AWS calls in IDE toolkits
and Terraform, so it imports nothing but the standard library's HTTP client."""

from __future__ import annotations

import json
import sys
import time

from .daemon_client import DaemonClient, DaemonError

# The daemon answers 503 while it fetches from STS; a short retry rides that out.
PENDING_RETRIES = 20
PENDING_PAUSE = 0.25


def main(profile: str) -> int:
    try:
        client = DaemonClient(timeout=10)
        credentials = None
        for _ in range(PENDING_RETRIES):
            try:
                credentials = client.credentials(profile)
                break
            except DaemonError as exc:
                if exc.status != 503:
                    raise
                time.sleep(PENDING_PAUSE)
        if credentials is None:
            raise DaemonError(f"the daemon could not get credentials for {profile!r} from STS in time; "
                              "`rolebroker status` shows the last error")
    except DaemonError as exc:
        print(f"rolebroker: {exc.message}", file=sys.stderr)
        return 1
    json.dump({
        "Version": 1,
        "AccessKeyId": credentials["AccessKeyId"],
        "SecretAccessKey": credentials["SecretAccessKey"],
        "SessionToken": credentials["Token"],
        "Expiration": credentials["Expiration"],
    }, sys.stdout)
    sys.stdout.write("\n")
    return 0
