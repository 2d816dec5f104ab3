"""What a reloaded config changes: which profiles' plans differ (and so lose their sessions),
and which keep their last good plan because the new file broke them."""

from __future__ import annotations

import dataclasses
import logging

from . import topology
from .config import BrokerConfig

log = logging.getLogger("rolebroker.sessions")


def next_config(old: BrokerConfig, new: BrokerConfig) -> tuple[BrokerConfig, set[str]]:
    """The config to run with, and the profiles whose sessions no longer fit it.

    A profile that worked and now has an error (a bad value on its source, say) keeps its last
    good plan, and with it its sessions, until the file is fixed: `status` says why. A chained
    profile depends on its source's credentials, so it changes with the source. MFA sessions
    no profile refers to any more are not touched here: an editor's half-saved file must not
    throw away a session a human typed a code for."""
    kept = {name: old.plans[name] for name in new.errors if name in old.plans and name not in new.plans}
    if kept:
        new = dataclasses.replace(new, plans={**new.plans, **kept})
        log.warning("config: %s keep their last good settings until the errors are fixed", ", ".join(sorted(kept)))
    changed = {name for name in set(old.plans) | set(new.plans) if old.plans.get(name) != new.plans.get(name)}
    for name, plan in new.plans.items():
        if any(link in changed for link in topology.dependencies(new.plans, plan)):
            changed.add(name)
    return new, changed
