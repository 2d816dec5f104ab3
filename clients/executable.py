"""The path of this CLI's own executable, for lines other programs run later (a unit's
ExecStart=, a config's credential_process): their PATH may not be the user's."""

from __future__ import annotations

import os
import sys


def rolebroker_executable() -> str:
    invoked = sys.argv[0]
    if os.path.basename(invoked) == "rolebroker" and os.path.exists(invoked):
        return os.path.abspath(invoked)
    import shutil  # only when the script was not run by that name (its import costs every call)

    return shutil.which("rolebroker") or "rolebroker"
