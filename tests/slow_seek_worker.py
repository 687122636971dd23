"""``closedloop`` with a slow seek: the worker's seek to the committed offsets, at the end of a rebalance, is
followed by ``CLOSEDLOOP_TEST_SEEK_DELAY_S`` seconds more before Faust goes on, as on a loaded machine.

Run as ``python -m tests.slow_seek_worker worker ...`` by ``tests/test_worker.py``; it widens the window in which
Faust 0.15.3 delivered records to the streams after the seek and then cleared them (``compat.faust_patches``,
fault 3). Test-only: the worker's own code is unchanged.
"""

from __future__ import annotations

import asyncio
import os

from faust.transport import consumer as faust_consumer

from closedloop.cli import main

_original_perform_seek = faust_consumer.Consumer.perform_seek


async def _perform_seek_then_wait(self) -> None:
    await _original_perform_seek(self)
    await asyncio.sleep(float(os.environ["CLOSEDLOOP_TEST_SEEK_DELAY_S"]))


faust_consumer.Consumer.perform_seek = _perform_seek_then_wait

if __name__ == "__main__":
    main()
