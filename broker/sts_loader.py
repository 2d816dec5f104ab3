"""The data loader of the botocore session STS clients are made from (see sts.py): it knows
STS is the only service there is, and keeps only STS's part of botocore's endpoints table.

Imported with the first STS call, like the rest of botocore's client machinery.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

import botocore.loaders

SERVICE = "sts"
ENDPOINTS = "endpoints"


class StsOnlyLoader(botocore.loaders.Loader):
    """botocore's Loader for a session that makes STS clients and nothing else."""

    def __init__(self, extra_search_paths: list[str] | None = None) -> None:
        super().__init__(extra_search_paths=extra_search_paths)
        self._endpoints: tuple[dict[str, Any], str] | None = None

    def list_available_services(self, type_name: str) -> list[str]:
        # Before it loads a model, the stock loader lists every service it has, to say whether
        # the one asked for exists: some 400 directories and 1,300 stat calls, most of the time
        # the first client takes (about 25 ms of 45 here, and far more with a cold disk cache,
        # on the way to a cold daemon's first 200).
        return [SERVICE]

    def load_data_with_path(self, name: str) -> tuple[Any, str]:
        # The session's endpoint resolver loads `endpoints` (every service in every partition:
        # 1.25 MB of JSON, some 7 MiB once parsed) and keeps it as long as the session lives.
        # `load_data` comes here too.
        if name != ENDPOINTS:
            return super().load_data_with_path(name)
        if self._endpoints is None:
            self._endpoints = self._load_sts_endpoints()
        return self._endpoints

    def _load_sts_endpoints(self) -> tuple[dict[str, Any], str]:
        # The path returned is the stock loader's (no extension), so that the session knows, as
        # with the stock loader, whether the table is botocore's built-in one.
        path = self._endpoints_path()
        if path is not None and os.path.isfile(path + ".json"):
            with open(path + ".json", "rb") as file:
                return sts_endpoints_from_text(file.read().decode("utf-8")), path
        # A table in another format the stock loader reads (.json.gz), or none at all (its
        # DataNotFoundError): a throwaway stock loader on the same search path loads it whole.
        stock = botocore.loaders.Loader(extra_search_paths=list(self.search_paths),
                                        include_default_search_paths=False)
        table, path = stock.load_data_with_path(ENDPOINTS)
        return sts_endpoints(table), path

    def _endpoints_path(self) -> str | None:
        # Where the stock loader would read `endpoints` from: the first directory on the search
        # path (AWS_DATA_PATH, ~/.aws/models, botocore's data) with the file in any format it reads.
        for directory in self.search_paths:
            path = os.path.join(directory, ENDPOINTS)
            if os.path.isdir(directory) and self.file_loader.exists(path):
                return path
        return None


def sts_endpoints(table: dict[str, Any]) -> dict[str, Any]:
    """botocore's endpoints table with every partition whole but for its `services`, which
    keeps STS alone: all that STS's endpoint resolution reads (botocore's EndpointResolver
    looks up the service it resolves and no other, and each partition's own keys)."""
    return {key: [_sts_partition(partition) for partition in value] if key == "partitions" else value
            for key, value in table.items()}


def _sts_partition(partition: dict[str, Any]) -> dict[str, Any]:
    if "services" not in partition:  # botocore's own KeyError, as with the full table
        return partition
    services = partition["services"]
    return {**partition, "services": {name: services[name] for name in services if name == SERVICE}}


# The same table, read from its text without ever holding the whole of it: the decoder builds
# one service's entry at a time, and the ones dropped are freed at once, their memory used again
# for the next. Parsed whole and then pruned, the full table's memory mostly stays with the
# process (the interpreter's free lists keep a few of its dicts, scattered all over it). RSS
# after the first STS client, here: +8.0 MiB with the whole table, +5.6 with it parsed whole
# and pruned, +1.3 read this way (in 6.6 ms where botocore parses it in 11.6).
_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace
Reader = Callable[[str, int], tuple[Any, int]]


def sts_endpoints_from_text(text: str) -> dict[str, Any]:
    """sts_endpoints(json.loads(text)), in plain dicts."""
    table, end = _object(text, _skip(text, 0), lambda key: _partitions if key == "partitions" else _value)
    if _skip(text, end) != len(text):
        raise ValueError(f"{ENDPOINTS}: extra data after the table, at {end}")
    return table


def _partitions(text: str, pos: int) -> tuple[list[Any], int]:
    return _array(text, pos, _partition)


def _partition(text: str, pos: int) -> tuple[dict[str, Any], int]:
    return _object(text, pos, lambda key: _services if key == "services" else _value)


def _services(text: str, pos: int) -> tuple[dict[str, Any], int]:
    return _object(text, pos, lambda key: _value if key == SERVICE else None)


def _value(text: str, pos: int) -> tuple[Any, int]:
    value, end = _DECODER.raw_decode(text, pos)
    return value, end


def _object(text: str, pos: int, reader: Callable[[str], Reader | None]) -> tuple[dict[str, Any], int]:
    """The object at `pos` and where it ends. reader(key) reads that member's value; None:
    the value is read past and dropped. A key repeated: the last one counts, as in json.loads."""
    result: dict[str, Any] = {}
    pos = _expect(text, pos, "{")
    if text.startswith("}", pos):
        return result, pos + 1
    while True:
        key, pos = _value(text, pos)
        if not isinstance(key, str):
            raise ValueError(f"{ENDPOINTS}: a key that is not a string, at {pos}")
        pos = _expect(text, pos, ":")
        read = reader(key)
        value, pos = (read or _value)(text, pos)
        if read is not None:
            result[key] = value
        pos = _skip(text, pos)
        if text.startswith("}", pos):
            return result, pos + 1
        pos = _expect(text, pos, ",")


def _array(text: str, pos: int, read: Reader) -> tuple[list[Any], int]:
    result: list[Any] = []
    pos = _expect(text, pos, "[")
    if text.startswith("]", pos):
        return result, pos + 1
    while True:
        value, pos = read(text, pos)
        result.append(value)
        pos = _skip(text, pos)
        if text.startswith("]", pos):
            return result, pos + 1
        pos = _expect(text, pos, ",")


def _skip(text: str, pos: int) -> int:
    space = _SPACE.match(text, pos)
    return space.end() if space else pos  # it always matches, if only the empty string


def _expect(text: str, pos: int, char: str) -> int:
    """Past `char` at `pos` (whitespace before it and after it skipped)."""
    pos = _skip(text, pos)
    if not text.startswith(char, pos):
        raise ValueError(f"{ENDPOINTS}: {char!r} expected at {pos}")
    return _skip(text, pos + 1)


def loader_for(data_path: str | None) -> StsOnlyLoader:
    """The search path botocore's own create_loader builds from the session's `data_path`
    (AWS_DATA_PATH): its directories come before ~/.aws/models and botocore's data."""
    if data_path is None:
        return StsOnlyLoader()
    return StsOnlyLoader([os.path.expanduser(os.path.expandvars(path)) for path in data_path.split(os.pathsep)])
