"""Objects that live as long as the process leave the garbage collector's view.

A full collection walks every tracked object: with botocore's models loaded
that is hundreds of thousands, tens of milliseconds during which no request is answered.
Modules, models and the apps built from them never become garbage, so once they are
loaded they are moved to the permanent generation (gc.freeze), after a collection, so
that no garbage (an STS error's traceback holding a key, say) is frozen with them.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()


def freeze_long_lived() -> None:
    """Collect, then freeze what survives. Call after loading something big for good."""
    with _lock:
        gc.collect()
        gc.freeze()
