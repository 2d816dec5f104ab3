"""The data loader of the botocore session STS clients are made from (see sts.py): it knows
STS is the only service there is.

Imported with the first STS call, like the rest of botocore's client machinery.
"""

from __future__ import annotations

import os

import botocore.loaders

SERVICE = "sts"


class StsOnlyLoader(botocore.loaders.Loader):
    """botocore's Loader for a session that makes STS clients and nothing else."""

    def list_available_services(self, type_name: str) -> list[str]:
        # Before it loads a model, the stock loader lists every service it has, to say whether
        # the one asked for exists: some 400 directories and 1,300 stat calls, most of the time
        # the first client takes (about 25 ms of 45 here, and far more with a cold disk cache,
        # on the way to a cold daemon's first 200).
        return [SERVICE]


def loader_for(data_path: str | None) -> StsOnlyLoader:
    """The search path botocore's own create_loader builds from the session's `data_path`
    (AWS_DATA_PATH): its directories come before ~/.aws/models and botocore's data."""
    if data_path is None:
        return StsOnlyLoader()
    return StsOnlyLoader([os.path.expanduser(os.path.expandvars(path)) for path in data_path.split(os.pathsep)])
