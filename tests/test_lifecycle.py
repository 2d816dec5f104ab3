"""Sessions over long simulated days: refresh ahead of expiry, single-flight, bounded
waits, STS faults, the end of the MFA session. Time moves only by the injected clock."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import time
from pathlib import Path

import pytest

from tests.harness import CONFIG_LAYOUT, DEV_ROLE, OPEN_ROLE, Broker, alice, start_broker

FIFTEEN_MINUTES = 15 * 60


def remaining(broker: Broker, body: dict[str, str]) -> float:
    expires = dt.datetime.strptime(body["Expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    return expires.timestamp() - broker.clock.now()


def fetch_ok(broker: Broker, profile: str) -> dict[str, str]:
    status, _, body = broker.raw_get(profile, broker.token(profile))
    assert status == 200, body
    assert remaining(broker, body) > FIFTEEN_MINUTES, body["Expiration"]
    return body


def test_role_credentials_are_renewed_ahead_of_expiry(broker: Broker) -> None:
    broker.login("dev")
    first = fetch_ok(broker, "dev")
    for _ in range(12):  # two hours in ten-minute steps
        broker.advance(600)
        fetch_ok(broker, "dev")
    assert fetch_ok(broker, "dev")["AccessKeyId"] != first["AccessKeyId"]
    assert broker.sts.count("GetSessionToken") == 1


def test_36_hours_one_code_two_profiles_concurrent_clients(tmp_path: Path) -> None:
    layout = {"credentials": CONFIG_LAYOUT["credentials"],
              "config": CONFIG_LAYOUT["config"] + "rolebroker_mfa_session_seconds = 129600\n"}
    layout["config"] = layout["config"].replace("mfa_serial", "rolebroker_mfa_session_seconds = 129600\nmfa_serial", 1)
    broker = start_broker(tmp_path, layout)
    try:
        broker.login("dev")
        failures: list[str] = []

        def client(profile: str) -> None:
            status, _, body = broker.raw_get(profile, broker.token(profile))
            if status != 200 or remaining(broker, body) <= FIFTEEN_MINUTES:
                failures.append(f"{profile} at {broker.clock.now()}: {status} {body}")

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            steps = 36 * 12  # five-minute steps
            for _ in range(steps):
                broker.advance(300)
                list(pool.map(client, ["dev", "prod", "dev", "prod", "dev", "prod"]))
        assert failures == []
        assert len(broker.sts.used_codes()) == 1
        assert broker.sts.count("GetSessionToken") == 1
        assumed = broker.sts.count("AssumeRole")
        # Renewal 20-25 min ahead of a 60 min expiry: 35-40 min apart, per profile.
        assert 2 * 36 * 60 / 40 <= assumed <= 2 * 36 * 60 / 35 + 2, assumed
    finally:
        broker.stop()


def test_200_concurrent_requests_on_a_cold_profile_make_one_sts_call(tmp_path: Path) -> None:
    layout = {"credentials": CONFIG_LAYOUT["credentials"],
              "config": f"[profile open]\nrole_arn = {OPEN_ROLE}\nsource_profile = alice\n"}
    broker = start_broker(tmp_path, layout, users=[alice(with_mfa=False)])
    try:
        token = broker.token("open")
        with concurrent.futures.ThreadPoolExecutor(200) as pool:
            results = list(pool.map(lambda _: broker.raw_get("open", token)[0], range(200)))
        assert broker.sts.count("AssumeRole") == 1
        assert set(results) <= {200, 503}
        assert results.count(200) >= 1
        broker.settle()
        assert broker.raw_get("open", token)[0] == 200
        assert broker.sts.count("AssumeRole") == 1
    finally:
        broker.stop()


def test_a_cold_request_waits_briefly_then_gets_a_retryable_503(tmp_path: Path) -> None:
    layout = {"credentials": CONFIG_LAYOUT["credentials"],
              "config": f"[profile open]\nrole_arn = {OPEN_ROLE}\nsource_profile = alice\n"}
    broker = start_broker(tmp_path, layout, users=[alice(with_mfa=False)])
    try:
        broker.sts.inject_fault("AssumeRole", "slow")
        started = time.monotonic()
        status, _, body = broker.raw_get("open", broker.token("open"))
        waited = time.monotonic() - started
        assert (status, body["code"]) == (503, "CredentialsPending")
        assert waited < 1.0  # the JS and Java SDKs give up after one second
        broker.sts.release_hung()  # STS answers at last
        broker.settle()
        assert broker.raw_get("open", broker.token("open"))[0] == 200  # the SDK's retry, from memory
        assert broker.sts.count("AssumeRole") == 1
    finally:
        broker.stop()


@pytest.mark.parametrize("fault", ["throttling", "server_error", "unavailable"])
def test_faults_during_refresh_are_invisible_while_credentials_are_valid(broker: Broker, fault: str) -> None:
    broker.login("dev")
    first = fetch_ok(broker, "dev")
    broker.sts.inject_fault("AssumeRole", fault, times=1000)
    broker.advance(41 * 60)  # past every profile's refresh time: the refresh fails
    for _ in range(3):
        assert fetch_ok(broker, "dev")["AccessKeyId"] == first["AccessKeyId"]
    dev = next(r for r in broker.control().request("GET", "/v1/status")["profiles"] if r["profile"] == "dev")
    assert dev["last_error"] and "STS" in dev["last_error"]
    broker.sts.clear_faults()
    broker.advance(301)  # past the backoff
    renewed = fetch_ok(broker, "dev")
    assert renewed["AccessKeyId"] != first["AccessKeyId"]
    dev = next(r for r in broker.control().request("GET", "/v1/status")["profiles"] if r["profile"] == "dev")
    assert dev["last_error"] is None


def test_a_hung_sts_during_refresh_is_invisible(broker: Broker) -> None:
    broker.login("dev")
    first = fetch_ok(broker, "dev")
    broker.sts.inject_fault("AssumeRole", "timeout", times=1000)
    broker.clock.advance(41 * 60)
    for _ in range(3):  # each request kicks the (single) refresh; none waits for it
        started = time.monotonic()
        assert fetch_ok(broker, "dev")["AccessKeyId"] == first["AccessKeyId"]
        assert time.monotonic() - started < 0.5
    # The requests (and maybe the background loop) want dev renewed: wait until that call is stuck in STS.
    def hung_dev_calls() -> int:
        return sum(1 for c in broker.sts.calls if c.params.get("RoleArn") == DEV_ROLE and c.status == 0)

    for _ in range(2):  # at most dev and prod are held
        if hung_dev_calls():
            break
        assert broker.sts.wait_held()
    assert hung_dev_calls() == 1  # one refresh, however many requests asked
    broker.sts.clear_faults()
    broker.sts.release_hung()  # the connection drops: the refresh fails and is retried later
    broker.settle()
    assert fetch_ok(broker, "dev")["AccessKeyId"] == first["AccessKeyId"]
    broker.advance(301)
    assert fetch_ok(broker, "dev")["AccessKeyId"] != first["AccessKeyId"]


def test_backoff_limits_sts_calls_during_an_outage(broker: Broker) -> None:
    broker.login("dev")
    broker.advance(30 * 60)
    broker.sts.inject_fault("AssumeRole", "throttling", times=10_000)
    before = broker.sts.count("AssumeRole")
    for _ in range(20):  # 20 minutes of outage in one-minute steps, with clients asking
        broker.advance(60)
        assert broker.raw_get("dev", broker.token("dev"))[0] == 200
    attempts = broker.sts.count("AssumeRole") - before
    # Without backoff: 2 profiles x 20 steps = 40 calls or more.
    assert 2 <= attempts <= 2 * 8, attempts


def test_after_the_mfa_session_ends_issued_credentials_serve_until_expiry(broker: Broker) -> None:
    broker.login("dev")
    broker.advance(12 * 3600 - 60)  # the 12 h session is about to end
    status, _, body = broker.raw_get("dev", broker.token("dev"))
    assert status == 200
    last_key = body["AccessKeyId"]
    left = remaining(broker, body)
    broker.advance(120)  # the session has ended: no refresh is possible any more
    status, _, body = broker.raw_get("dev", broker.token("dev"))
    assert status == 200 and body["AccessKeyId"] == last_key
    broker.advance(left)  # now the role credentials have expired too
    status, _, body = broker.raw_get("dev", broker.token("dev"))
    assert (status, body["code"]) == (403, "LoginRequired")
    assert "rolebroker login dev" in body["message"]


def test_mfa_session_end_is_announced_in_log_and_status(broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    broker.login("dev")
    broker.advance(11 * 3600)
    assert not [r for r in caplog.records if "MFA session" in r.getMessage() and "ends in" in r.getMessage()]
    broker.advance(40 * 60)  # 20 minutes left
    warnings = [r for r in caplog.records if "ends in" in r.getMessage()]
    assert len(warnings) == 1 and "rolebroker login" in warnings[0].getMessage()
    dev = next(r for r in broker.control().request("GET", "/v1/status")["profiles"] if r["profile"] == "dev")
    assert any("MFA session ends" in note for note in dev["notes"])
