"""Operations whose storage work a DELETE /1.0/operations/{id} stops while they run: copy, export,
import (transfer_api.py), snapshot and restore (snapshots_api.py).

Their action runs under `fsutil.stoppable` with the operation's stop point: the storage code asks
it between steps and while cp or tar runs (the tool is killed with its children), raises
`operations.Cancelled`, and undoes what it made on the way up; the operation ends `cancelled`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jaula.daemon.models import OperationRow
from jaula.daemon.operations import Operations, stop_point
from jaula.storage import fsutil


def submit(ops: Operations, description: str, action: Callable[[], Any], **kw: Any) -> OperationRow:
    """`ops.submit(description, action, **kw)`, stoppable while it runs (module doc)."""
    box: dict[str, str] = {}

    def check() -> None:
        if "id" in box:  # set as soon as submit returns: before anyone knows the id to cancel
            stop_point(box["id"])

    def run() -> Any:
        with fsutil.stoppable(check):
            return action()
    op = ops.submit(description, run, stoppable=True, **kw)
    box["id"] = op.id
    return op
