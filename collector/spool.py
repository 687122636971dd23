"""An on-disk, bounded, fsynced FIFO of Kafka records, for when the broker is unreachable.

Layout of a spool directory::

    000000000001.seg   frames appended in order; a new segment starts past ``segment_bytes``
    000000000002.seg
    cursor             "<segment> <offset>": the first record not yet published (replaced atomically)

A frame is ``>II`` (payload length, CRC32 of the payload) then the payload ``>Hi`` (topic length, key length or
-1 for no key), topic, key, value. A crash can leave a torn frame at the tail of the last segment; opening the
spool truncates it (that record's request was never answered, so the client still holds it). Records are
published at least once: a crash between publishing and moving the cursor publishes them again, and the
deterministic ``event_id`` in every envelope lets downstream drop the copy.

Not thread-safe: one owner (the publisher) serialises every call.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

_FRAME = struct.Struct(">II")
_META = struct.Struct(">Hi")
_SEGMENT_SUFFIX = ".seg"


class SpoolRecord(NamedTuple):
    """One record waiting for the broker: exactly what would have been sent. (A tuple: one is built per event.)"""

    topic: str
    key: bytes | None
    value: bytes

    def encode(self) -> bytes:
        topic = self.topic.encode()
        key = self.key or b""
        payload = _META.pack(len(topic), -1 if self.key is None else len(key)) + topic + key + self.value
        return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload

    @classmethod
    def decode(cls, payload: bytes) -> "SpoolRecord":
        topic_len, key_len = _META.unpack_from(payload)
        start = _META.size
        topic = payload[start : start + topic_len].decode()
        start += topic_len
        key = None
        if key_len >= 0:
            key = payload[start : start + key_len]
            start += key_len
        return cls(topic, key, payload[start:])


class SpoolFull(Exception):
    """Appending would exceed the spool's bound: the caller must refuse the data (503), not drop it."""


@dataclass(frozen=True, order=True)
class Position:
    segment: int
    offset: int


class Spool:
    """FIFO of :class:`SpoolRecord` in ``directory``, at most ``max_bytes`` of unpublished frames."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = 8 * 1024 * 1024) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._cursor = self._load_cursor()
        segments = self._segments()
        if segments:
            self._repair_tail(segments[-1])
        else:
            self._segment_path(self._cursor.segment).touch()
        self._write_segment = self._segments()[-1]
        self._pending = self._count_pending()

    # -- state ---------------------------------------------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        """Bytes of frames not yet published."""
        return self._pending

    @property
    def empty(self) -> bool:
        return self._pending == 0

    # -- writing -------------------------------------------------------------------------------------------------

    def append(self, records: list[SpoolRecord]) -> None:
        """Append ``records`` in order and fsync before returning; raise :class:`SpoolFull` (writing nothing)."""
        if not records:
            return
        data = b"".join(record.encode() for record in records)
        if self._pending + len(data) > self.max_bytes:
            raise SpoolFull(f"spool holds {self._pending} bytes; {len(data)} more would pass {self.max_bytes}")
        path = self._segment_path(self._write_segment)
        if path.stat().st_size >= self.segment_bytes:
            self._write_segment += 1
            path = self._segment_path(self._write_segment)
        with open(path, "ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if not path.exists() or path.stat().st_size == len(data):
            _fsync_dir(self.directory)  # a new segment file: make its directory entry durable too
        self._pending += len(data)

    # -- reading -------------------------------------------------------------------------------------------------

    def read(self, max_records: int) -> tuple[list[SpoolRecord], Position]:
        """Up to ``max_records`` from the cursor on, and the position after them (pass it to :meth:`commit`)."""
        records: list[SpoolRecord] = []
        position = self._cursor
        while len(records) < max_records:
            path = self._segment_path(position.segment)
            size = path.stat().st_size if path.exists() else 0
            if position.offset >= size:
                if position.segment >= self._write_segment:
                    break
                position = Position(position.segment + 1, 0)
                continue
            with open(path, "rb") as handle:
                handle.seek(position.offset)
                offset = position.offset
                while len(records) < max_records and offset < size:
                    header = handle.read(_FRAME.size)
                    length, crc = _FRAME.unpack(header)
                    payload = handle.read(length)
                    if zlib.crc32(payload) != crc:  # cannot happen after _repair_tail unless the disk lies
                        raise OSError(f"spool frame at {path}:{offset} is corrupt")
                    records.append(SpoolRecord.decode(payload))
                    offset += _FRAME.size + length
            position = Position(position.segment, offset)
        return records, position

    def commit(self, position: Position) -> None:
        """Mark everything before ``position`` as published; delete fully published segments."""
        tmp = self.directory / "cursor.tmp"
        with open(tmp, "w") as handle:
            handle.write(f"{position.segment} {position.offset}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.directory / "cursor")
        _fsync_dir(self.directory)
        self._cursor = position
        for segment in self._segments():
            if segment < position.segment:
                self._segment_path(segment).unlink(missing_ok=True)
        self._pending = self._count_pending()
        write_path = self._segment_path(self._write_segment)
        if self._pending == 0 and self._cursor.segment == self._write_segment and write_path.stat().st_size > 0:
            self._reset_if_drained()

    # -- internals -----------------------------------------------------------------------------------------------

    def _reset_if_drained(self) -> None:
        """Start a fresh segment once everything is published, so disk space is given back."""
        old = self._write_segment
        self._write_segment = old + 1
        self._segment_path(self._write_segment).touch()
        self.commit(Position(self._write_segment, 0))

    def _segment_path(self, segment: int) -> Path:
        return self.directory / f"{segment:012d}{_SEGMENT_SUFFIX}"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.directory.glob(f"*{_SEGMENT_SUFFIX}") if p.stem.isdigit())

    def _load_cursor(self) -> Position:
        try:
            segment, offset = (self.directory / "cursor").read_text().split()
            return Position(int(segment), int(offset))
        except (FileNotFoundError, ValueError):
            segments = self._segments()
            return Position(segments[0] if segments else 1, 0)

    def _count_pending(self) -> int:
        total = 0
        for segment in self._segments():
            if segment < self._cursor.segment:
                continue
            size = self._segment_path(segment).stat().st_size
            total += size - (self._cursor.offset if segment == self._cursor.segment else 0)
        return max(total, 0)

    def _repair_tail(self, segment: int) -> None:
        """Truncate a torn or corrupt frame at the end of the last segment (a crash mid-append)."""
        path = self._segment_path(segment)
        good = 0
        with open(path, "rb") as handle:
            while True:
                header = handle.read(_FRAME.size)
                if len(header) < _FRAME.size:
                    break
                length, crc = _FRAME.unpack(header)
                payload = handle.read(length)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    break
                good += _FRAME.size + length
        if good < path.stat().st_size:
            with open(path, "r+b") as handle:
                handle.truncate(good)
                os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
