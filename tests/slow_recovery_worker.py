"""``closedloop`` whose table recovery gets its first changelog records late: the first batch of records the Kafka
client returns that holds changelog records reaches Faust ``CLOSEDLOOP_TEST_RECOVERY_DELAY_S`` seconds after the
client handed it over (its position is already past them), as on a loaded machine where a large first batch takes
a while from the consumer thread to the recovery loop.

Run as ``python -m tests.slow_recovery_worker worker ...`` by ``tests/test_exactly_once.py``; it widens the window in
which Faust 0.15.3's recovery, under ``exactly_once``, took the client's position for "read to the end" and skipped
records still on their way (``compat.faust_patches``, fault 6). Test-only: the worker's own code is unchanged.
"""

from __future__ import annotations

import asyncio
import os

from faust.transport import consumer as faust_consumer

from closedloop.cli import main

_original_wait_next_records = faust_consumer.Consumer._wait_next_records
_delayed: list[bool] = []


async def _wait_next_records_late(self, timeout: float):
    records, active_partitions = await _original_wait_next_records(self, timeout)
    if records and not _delayed and any(self._is_changelog_tp(tp) for tp in records):
        _delayed.append(True)
        await asyncio.sleep(float(os.environ["CLOSEDLOOP_TEST_RECOVERY_DELAY_S"]))
    return records, active_partitions


faust_consumer.Consumer._wait_next_records = _wait_next_records_late

if __name__ == "__main__":
    main()
