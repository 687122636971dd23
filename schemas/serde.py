"""One serialization for every record on every topic: JSON (orjson), UTF-8 keys."""

from __future__ import annotations

from typing import TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def dumps(record: BaseModel) -> bytes:
    """Serialize a model to the JSON bytes that go on a topic (decimals as strings, times as ISO 8601)."""
    return orjson.dumps(record.model_dump(mode="json", exclude_none=False))


def loads(data: bytes | str, model: type[M]) -> M:
    """Parse and validate one record; raises pydantic.ValidationError on a bad record."""
    return model.model_validate_json(data)


def loads_as(data: bytes | str, adapter: TypeAdapter[T]) -> T:
    """Parse with a TypeAdapter (for unions)."""
    return adapter.validate_json(data)


def encode_key(key: str | None) -> bytes | None:
    return None if key is None else key.encode("utf-8")


def decode_key(key: bytes | None) -> str | None:
    return None if key is None else key.decode("utf-8", errors="replace")
