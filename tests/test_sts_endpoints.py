"""The STS session's pruned endpoints table (broker/sts_loader.py), with botocore as the oracle.

The daemon's STS session loads an endpoints table with every partition but only STS's service
entry. For each config in a matrix (regions of every partition and none known, the global
endpoint, sts_regional_endpoints, FIPS, dual-stack, endpoint URLs, AWS_DATA_PATH tables), an
STS client made the daemon's way from that session must send its request where a client from
a plain botocore session sends it, signed for the same region, or fail the same way. A request
never leaves: a `before-send` handler notes it and answers with a canned response.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.awsrequest
import botocore.loaders
import botocore.session
import pytest

from rolebroker.broker.config import ConfigFiles
from rolebroker.broker.sts import BotocoreSts, client_config, sts_session
from rolebroker.broker.sts_loader import StsOnlyLoader, sts_endpoints, sts_endpoints_from_text

KEY, SECRET = "AKIAENDPOINTTEST0001", "endpoint/test/secret/000000000000000000000"
LOCAL = "http://127.0.0.1:9/sts-endpoint-test"  # never reached: before-send answers

REGIONS = ("us-east-1", "eu-west-1", "cn-north-1", "us-gov-west-1", "us-iso-east-1", "xx-test-1", "aws-global", None)
REGIONAL = (None, "legacy", "regional")  # sts_regional_endpoints (unset: botocore's default)
SWITCH = (False, True)


def _profile_name(region: str | None, regional: str | None, fips: bool, dualstack: bool) -> str:
    return f"m-{region or 'none'}-{regional or 'default'}-{'fips' if fips else 'std'}-{'ds' if dualstack else 'v4'}"


def _matrix_section(region: str | None, regional: str | None, fips: bool, dualstack: bool) -> str:
    lines = [f"[profile {_profile_name(region, regional, fips, dualstack)}]"]
    if region is not None:
        lines.append(f"region = {region}")
    if regional is not None:
        lines.append(f"sts_regional_endpoints = {regional}")
    lines += [f"use_fips_endpoint = {str(fips).lower()}", f"use_dualstack_endpoint = {str(dualstack).lower()}"]
    return "\n".join(lines) + "\n"


MATRIX = [(region, regional, fips, dualstack)
          for region in REGIONS for regional in REGIONAL for fips in SWITCH for dualstack in SWITCH]

# Endpoint URLs beat the table (or go with it): a profile's own, a `services` section's, the
# setting that ignores both, and an endpoint URL with no region to sign for.
ENDPOINT_PROFILES = {
    "url-on-profile": f"region = eu-west-1\nendpoint_url = {LOCAL}/own\n",
    "url-on-profile-fips-dualstack": f"region = us-gov-west-1\nendpoint_url = {LOCAL}/own\n"
                                     "use_fips_endpoint = true\nuse_dualstack_endpoint = true\n",
    "url-without-region": f"endpoint_url = {LOCAL}/own\n",
    "services-section": "region = cn-north-1\nservices = local\n",
    "services-section-legacy": "region = us-east-1\nsts_regional_endpoints = legacy\nservices = local\n",
    "url-ignored": f"region = us-iso-east-1\nendpoint_url = {LOCAL}/own\nignore_configured_endpoint_urls = true\n",
}
SERVICES_SECTION = f"[services local]\nsts =\n  endpoint_url = {LOCAL}/pinned\n"

CANNED = (b'<GetSessionTokenResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetSessionTokenResult>'
          b"<Credentials><AccessKeyId>ASIAENDPOINTTEST0001</AccessKeyId><SecretAccessKey>s</SecretAccessKey>"
          b"<SessionToken>t</SessionToken><Expiration>2030-01-01T00:00:00Z</Expiration></Credentials>"
          b"</GetSessionTokenResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>"
          b"</GetSessionTokenResponse>")
SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")


class _Canned:
    """What botocore reads a response body from (AWSResponse.raw)."""

    def stream(self, **kwargs: Any) -> Iterator[bytes]:
        yield CANNED


def _answer(sent: list[dict[str, str]], request: botocore.awsrequest.AWSPreparedRequest,
            **kwargs: Any) -> botocore.awsrequest.AWSResponse:
    """before-send: note where the request goes and the scope it is signed for; answer it here."""
    authorization = request.headers.get("Authorization", b"")
    if isinstance(authorization, bytes):
        authorization = authorization.decode()
    scope = SCOPE.search(authorization)
    sent.append({"url": request.url, "scope": "/".join(scope.groups()) if scope else f"unsigned: {authorization!r}"})
    return botocore.awsrequest.AWSResponse(request.url, 200, {}, _Canned())


def _observe(session: botocore.session.Session, region: str | None) -> dict[str, Any]:
    """Where the first request of an STS client made from `session` goes, and what the client
    says of itself; or how it fails. The daemon's arguments (sts.py BotocoreSts._create)."""
    try:
        client = session.create_client("sts", region_name=region, aws_access_key_id=KEY,
                                       aws_secret_access_key=SECRET, config=client_config())
    except Exception as exc:
        return {"fails at create_client": f"{type(exc).__name__}: {exc}"}
    seen: dict[str, Any] = {"endpoint_url": client.meta.endpoint_url, "region_name": client.meta.region_name,
                            "partition": client.meta.partition}
    sent: list[dict[str, str]] = []
    client.meta.events.register("before-send.sts.GetSessionToken",
                                lambda request, **kwargs: _answer(sent, request, **kwargs))
    try:
        client.get_session_token(DurationSeconds=900)
    except Exception as exc:
        return {**seen, "fails at call": f"{type(exc).__name__}: {exc}"}
    assert len(sent) == 1, sent
    return {**seen, **sent[0]}


def _plain(profile: str) -> dict[str, Any]:
    """The oracle: what a plain botocore session (the AWS CLI's) does for the profile."""
    return _observe(botocore.session.Session(profile=profile), None)


def _daemon(session: botocore.session.Session, profile: str) -> dict[str, Any]:
    """The daemon's way: one session for every profile, switched to this one, and the
    profile's region passed in (sts.py BotocoreSts._client_and_fallback)."""
    session.set_config_variable("profile", profile)
    return _observe(session, session.get_config_variable("region"))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfigFiles]:
    directory = tmp_path_factory.mktemp("sts-endpoints")
    sections = [_matrix_section(*case) for case in MATRIX]
    sections += [f"[profile {name}]\n{body}" for name, body in ENDPOINT_PROFILES.items()]
    (directory / "config").write_text("\n".join([*sections, SERVICES_SECTION]))
    (directory / "credentials").write_text("")
    with pytest.MonkeyPatch.context() as env:
        _clean_environment(env, directory / "config", directory / "credentials")
        yield ConfigFiles(str(directory / "config"), str(directory / "credentials"))


def _clean_environment(env: pytest.MonkeyPatch, config: Path, credentials: Path) -> None:
    # The developer's own AWS settings (a region, an endpoint URL, a data path) must not reach
    # either side; both read the test's files.
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        env.delenv(name)
    env.setenv("AWS_CONFIG_FILE", str(config))
    env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))


@pytest.fixture(scope="module")
def pruned(files: ConfigFiles) -> botocore.session.Session:
    """The daemon's STS session, shared by the whole matrix as the daemon shares it."""
    return sts_session(files)


@pytest.mark.parametrize(("region", "regional", "fips", "dualstack"), MATRIX, ids=[_profile_name(*c) for c in MATRIX])
def test_sts_endpoint_as_botocore_resolves_it(pruned: botocore.session.Session, region: str | None,
                                              regional: str | None, fips: bool, dualstack: bool) -> None:
    profile = _profile_name(region, regional, fips, dualstack)
    assert _daemon(pruned, profile) == _plain(profile)


@pytest.mark.parametrize("profile", list(ENDPOINT_PROFILES))
def test_sts_endpoint_url_settings_as_botocore_resolves_them(pruned: botocore.session.Session, profile: str) -> None:
    assert _daemon(pruned, profile) == _plain(profile)


def test_sts_endpoint_from_the_environment(pruned: botocore.session.Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"{LOCAL}/environment")
    profile = _profile_name("us-gov-west-1", "regional", True, False)
    seen = _daemon(pruned, profile)
    assert seen == _plain(profile)
    assert seen["url"] == f"{LOCAL}/environment"


def test_the_matrix_is_not_vacuous(pruned: botocore.session.Session) -> None:
    """The oracle comparisons mean something only if the cases reach many endpoints, every
    partition asked for, and a refusal."""
    seen = [_daemon(pruned, profile) for profile in [*(_profile_name(*case) for case in MATRIX), *ENDPOINT_PROFILES]]
    urls = {s["url"] for s in seen if "url" in s}
    assert len(urls) >= 20, urls
    assert any("fails at call" in s or "fails at create_client" in s for s in seen)
    assert {s.get("partition") for s in seen} >= {"aws", "aws-cn", "aws-us-gov", "aws-iso"}
    for expected in ("https://sts.eu-west-1.amazonaws.com/", "https://sts.amazonaws.com/",
                     "https://sts-fips.us-east-1.amazonaws.com/", "https://sts.cn-north-1.amazonaws.com.cn/",
                     "https://sts.us-gov-west-1.amazonaws.com/", "https://sts.us-iso-east-1.c2s.ic.gov/",
                     "https://sts.xx-test-1.amazonaws.com/", "https://sts.eu-west-1.api.aws/"):
        assert expected in urls, (expected, urls)


def test_the_table_is_every_partition_with_sts_alone() -> None:
    full, full_path = botocore.loaders.Loader().load_data_with_path("endpoints")
    table, path = StsOnlyLoader().load_data_with_path("endpoints")
    assert path == full_path  # the session still knows the table is botocore's own
    assert [key for key in table] == [key for key in full]
    assert {key: value for key, value in table.items() if key != "partitions"} == \
        {key: value for key, value in full.items() if key != "partitions"}
    assert [p["partition"] for p in table["partitions"]] == [p["partition"] for p in full["partitions"]]
    for kept, whole in zip(table["partitions"], full["partitions"]):
        assert list(kept) == list(whole)  # every key of the partition, in its order
        assert {k: v for k, v in kept.items() if k != "services"} == {k: v for k, v in whole.items() if k != "services"}
        assert kept["services"] == {"sts": whole["services"]["sts"]}
    assert type(table) is dict and type(table["partitions"][0]["services"]["sts"]) is dict  # plain dicts


def test_the_session_knows_sts_alone(pruned: botocore.session.Session) -> None:
    # Its table, not compared with the file's: botocore's resolver writes into the entries it
    # resolves (hostname, dnsSuffix...), the full table's as well.
    table = pruned.get_component("data_loader").load_data("endpoints")
    assert [list(partition["services"]) for partition in table["partitions"]] == [["sts"]] * len(table["partitions"])
    # What the session says it knows, through botocore's own API.
    assert pruned.get_available_services() == ["sts"]
    assert pruned.get_available_regions("ec2") == []
    assert pruned.get_available_partitions() == botocore.session.Session().get_available_partitions()


def test_the_daemon_reports_the_endpoint_botocore_resolves(files: ConfigFiles) -> None:
    """BotocoreSts.endpoint (status, the console), on its own session."""
    gateway = BotocoreSts(files)
    for case in [("us-gov-west-1", "legacy", True, False), ("aws-global", None, False, False),
                 ("cn-north-1", "regional", False, True), ("xx-test-1", None, False, False)]:
        profile = _profile_name(*case)
        url, region, fallback = gateway.endpoint(profile, None)
        plain = _plain(profile)
        assert (url, region, fallback) == (plain["endpoint_url"], plain["region_name"], False)


# The streaming reader against json.loads and sts_endpoints: same table, same order, same errors.
TEXTS = {
    "botocore's own": None,
    "spacing": ' \n{ "partitions" :\t[ { "partition" : "p" , "services" : { "s3" : { } , "sts" : { "endpoints" : '
               '{ "r" : { } } } } , "regions" : { } } ] , "version" : 3 }\r\n',
    "compact, no sts": '{"partitions":[{"partition":"p","services":{"s3":{"a":[1,{"b":"}"}]}}}],"version":3}',
    "no services": '{"version":3,"partitions":[{"partition":"p","regions":{}},{"partition":"q","services":{}}]}',
    "no partitions": '{"partitions":[],"version":3}',
    "escaped keys, repeated keys": '{"partitions":[{"services":{"s\\u0074s":{"x":1},"sts":{"x":2},"ec2":{}},'
                                   '"partition":"p","partition":"p2"}]}',
    "strings holding structure": '{"partitions":[{"services":{"sts":{"h":"{\\"sts\\": [,]}"},"other":"]}"}}],'
                                 '"note":"services"}',
}


@pytest.mark.parametrize("name", list(TEXTS))
def test_the_streamed_table_is_the_parsed_table_pruned(name: str) -> None:
    text = TEXTS[name]
    if text is None:
        text = (Path(botocore.loaders.Loader.BUILTIN_DATA_PATH) / "endpoints.json").read_text(encoding="utf-8")
    expected = sts_endpoints(json.loads(text))
    streamed = sts_endpoints_from_text(text)
    assert streamed == expected
    assert json.dumps(streamed) == json.dumps(expected)  # the same order, all the way down


@pytest.mark.parametrize("text", ['{"partitions":[{"services":{"sts":{}}}]', '{"partitions":[}', '[]', '',
                                  '{"partitions":[{"services":{"sts":{} "x":{}}}]}', '{"a":1} {}', '{1:2}'])
def test_a_broken_table_is_refused(text: str) -> None:
    with pytest.raises(ValueError):  # json.JSONDecodeError is one
        sts_endpoints_from_text(text)


# A table of the user's own (AWS_DATA_PATH, ~/.aws/models) is read as botocore reads it, and since
# it is not botocore's own, its entries decide the endpoint (botocore's args.py): any mistake in
# which file is read, or in its path, shows as a different URL.
@pytest.mark.parametrize("form", ["json", "json.gz"])
def test_a_table_on_aws_data_path(form: str, files: ConfigFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = json.loads((Path(botocore.loaders.Loader.BUILTIN_DATA_PATH) / "endpoints.json").read_text(encoding="utf-8"))
    aws = next(p for p in table["partitions"] if p["partition"] == "aws")
    aws["services"]["sts"]["endpoints"]["eu-west-1"] = {"hostname": "sts.own-table.example"}
    text = json.dumps(table).encode()
    if form == "json":
        (tmp_path / "endpoints.json").write_bytes(text)
    else:
        (tmp_path / "endpoints.json.gz").write_bytes(gzip.compress(text))
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    profile = _profile_name("eu-west-1", "regional", False, False)
    session = sts_session(files)
    seen = _daemon(session, profile)
    assert seen == _plain(profile)
    assert seen["url"] == "https://sts.own-table.example/"
    assert session.get_component("data_loader").load_data_with_path("endpoints")[1] == str(tmp_path / "endpoints")


def test_the_loader_keeps_one_table(tmp_path: Path) -> None:
    """Loaded once per session: the resolver and any later `load_data` share it."""
    shutil.copy(Path(botocore.loaders.Loader.BUILTIN_DATA_PATH) / "endpoints.json", tmp_path / "endpoints.json")
    loader = StsOnlyLoader([str(tmp_path)])
    first = loader.load_data("endpoints")
    (tmp_path / "endpoints.json").unlink()
    assert loader.load_data_with_path("endpoints") == (first, str(tmp_path / "endpoints"))
    assert loader.load_data("endpoints") is first
