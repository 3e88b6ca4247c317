"""Connection ids with workers: unique in the instance, and not reused after a restart."""

from __future__ import annotations

import asyncio
import os

from gripd.core.config import default_config
from gripd.io.bus.hub import FrameLink
from gripd.runtime.admission import Admission
from gripd.runtime.app import App, WorkerSetup


def _ids(index: int, count: int, generation: int, n: int) -> list[str]:
    loop = asyncio.get_running_loop()
    admission = Admission.create(count)
    link = FrameLink(lambda msg: None, lambda: None, loop)
    app = App(
        default_config("/tmp"),
        route_lines=["* test"],
        worker=WorkerSetup(index, count, link, admission, generation),
    )
    try:
        return [app.next_conn_id() for _ in range(n)]
    finally:
        admission.close()
        os.close(admission.fd)


async def test_workers_interleave_and_restarts_move_on() -> None:
    assert _ids(0, 2, 0, 3) == ["1", "3", "5"]
    assert _ids(1, 2, 0, 3) == ["2", "4", "6"]
    restarted = _ids(1, 2, 1, 2)
    assert restarted == ["2000000002", "2000000004"]
    assert not set(restarted) & set(_ids(0, 2, 0, 3) + _ids(1, 2, 0, 3))
