"""``closedloop`` whose table writes reach Kafka late: each changelog record Faust's producer buffer hands over waits
``CLOSEDLOOP_TEST_CHANGELOG_DELAY_S`` seconds first, as a loaded worker's buffer does when thousands are queued.

Run as ``python -m tests.slow_changelog_worker worker ...`` by ``tests/test_exactly_once.py``; it widens the window in
which Faust 0.15.3 committed a transaction with the offset of an event whose table write was still in the buffer
(``compat.faust_patches``, fault 5). Test-only: the worker's own code is unchanged.
"""

from __future__ import annotations

import asyncio
import os

from faust import topics as faust_topics

from closedloop.cli import main

_original_publish_message = faust_topics.Topic.publish_message


async def _publish_message_late(self, fut, wait: bool = False):
    if self.get_topic_name().endswith("-changelog"):
        await asyncio.sleep(float(os.environ["CLOSEDLOOP_TEST_CHANGELOG_DELAY_S"]))
    return await _original_publish_message(self, fut, wait=wait)


faust_topics.Topic.publish_message = _publish_message_late

if __name__ == "__main__":
    main()
