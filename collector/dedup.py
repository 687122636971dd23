"""A bounded, persistent seen-set of webhook delivery ids, so a CRM's retry produces one event.

SQLite (WAL) so that it survives restarts and is shared by every worker process. Entries expire after a TTL
and the oldest are pruned past ``max_entries``. Calls block on disk: the app runs them in a thread.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path


class SeenDeliveries:
    """``claim(ids)`` marks ids as seen and says which were new; ``release(ids)`` forgets them again."""

    def __init__(self, path: Path, ttl_s: int, max_entries: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, seen_at REAL NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS seen_at ON seen (seen_at)")
        self._claims = 0

    def claim(self, delivery_ids: list[str]) -> list[bool]:
        """For each id: True if it is new (now claimed), False if it was seen within the TTL."""
        now = time.time()
        fresh: list[bool] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for delivery_id in delivery_ids:
                    row = self._db.execute("SELECT seen_at FROM seen WHERE id = ?", (delivery_id,)).fetchone()
                    if row is not None and row[0] > now - self.ttl_s:
                        fresh.append(False)
                        continue
                    self._db.execute("INSERT OR REPLACE INTO seen (id, seen_at) VALUES (?, ?)", (delivery_id, now))
                    fresh.append(True)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._claims += 1
            if self._claims % 1000 == 1:
                self._prune(now)
        return fresh

    def release(self, delivery_ids: list[str]) -> None:
        """Forget ids whose events could not be accepted, so the CRM's retry is processed."""
        with self._lock:
            self._db.executemany("DELETE FROM seen WHERE id = ?", [(i,) for i in delivery_ids])

    def _prune(self, now: float) -> None:
        self._db.execute("DELETE FROM seen WHERE seen_at <= ?", (now - self.ttl_s,))
        (count,) = self._db.execute("SELECT count(*) FROM seen").fetchone()
        if count > self.max_entries:
            self._db.execute(
                "DELETE FROM seen WHERE id IN (SELECT id FROM seen ORDER BY seen_at LIMIT ?)",
                (count - self.max_entries,),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
