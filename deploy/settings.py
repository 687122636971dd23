"""Settings of the single-machine stack (``closedloop up / down / status``): read once in the CLI command.

On top of the shared connection settings, the stack needs to know which Kafka to run, where its jars are cached,
and how long to wait for things. Environment variables carry the ``CLOSEDLOOP_`` prefix: ``CLOSEDLOOP_DATA_DIR``,
``CLOSEDLOOP_EMBEDDED_KAFKA_PORT``, ``CLOSEDLOOP_KAFKA_BROKERS``, ``CLOSEDLOOP_KAFKA_VERSION``,
``CLOSEDLOOP_KAFKA_CACHE_DIR``, ``CLOSEDLOOP_KAFKA_HEAP_MB``, ``CLOSEDLOOP_EMBEDDED_CLICKHOUSE_PORT``,
``CLOSEDLOOP_START_TIMEOUT_SECONDS``, ``CLOSEDLOOP_STOP_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, ValidationError

from schemas.settings import PipelineSettings

EMBEDDED_HOST = "127.0.0.1"  # the embedded services never listen on anything else


class StackSettings(PipelineSettings):
    """Where the embedded broker and ClickHouse endpoint keep their data, and how they are started and stopped."""

    kafka_version: str = Field(
        "4.4.0",
        pattern=r"^4\.\d+\.\d+$",
        description="The Apache Kafka release the embedded broker runs (4.x).",
    )
    kafka_cache_dir: Path | None = Field(
        None,
        description="Where Kafka's jars are cached once fetched; unset = $XDG_CACHE_HOME/closedloop, else "
        "~/.cache/closedloop.",
    )
    kafka_heap_mb: int = Field(768, ge=256, le=8192, description="Maximum Java heap of each embedded Kafka node.")
    start_timeout_seconds: float = Field(
        60.0, gt=0, description="How long `up` waits for a service to answer before giving up."
    )
    stop_timeout_seconds: float = Field(
        20.0, gt=0, description="How long `down` waits for a clean exit (Kafka's controlled shutdown) before SIGKILL."
    )

    @property
    def kafka_cache_root(self) -> Path:
        if self.kafka_cache_dir is not None:
            return self.kafka_cache_dir.expanduser().resolve()
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "closedloop"

    @property
    def data_root(self) -> Path:
        """The data directory as an absolute path, so PID files and process command lines compare reliably."""
        return self.data_dir.expanduser().resolve()

    @property
    def kafka_dir(self) -> Path:
        return self.data_root / "kafka"

    @property
    def clickhouse_dir(self) -> Path:
        return self.data_root / "clickhouse"

    @property
    def run_dir(self) -> Path:
        return self.data_root / "run"

    @property
    def logs_dir(self) -> Path:
        return self.data_root / "logs"


SettingsT = TypeVar("SettingsT", bound=PipelineSettings)


class SettingsError(Exception):
    """A setting from the environment has a bad value; the message names the variable and the fix."""


def describe_validation_error(error: ValidationError, cls: type[PipelineSettings]) -> str:
    """Turn a pydantic error about settings into lines like ``CLOSEDLOOP_PARTITIONS='abc': Input should be ...``."""
    prefix = cls.model_config.get("env_prefix", "")
    lines = [f"Invalid setting{'s' if error.error_count() > 1 else ''}:"]
    for item in error.errors():
        if not item["loc"]:  # a check across settings: its message names the variables itself
            lines.append("  " + str(item["msg"]).removeprefix("Value error, ").replace("\n", "\n  "))
            continue
        field = ".".join(str(part) for part in item["loc"])
        variable = f"{prefix}{field}".upper()
        value = item.get("input")
        shown = "" if isinstance(value, dict) or value is None else f"={value!r}"
        lines.append(f"  {variable}{shown}: {item['msg']}")
    lines.append("Fix the environment variable(s) above (or unset them to use the defaults) and run again.")
    return "\n".join(lines)


def read_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Read ``cls`` from the environment once; a bad value raises ``SettingsError`` with a readable message."""
    try:
        return cls(**overrides)
    except ValidationError as error:
        raise SettingsError(describe_validation_error(error, cls)) from None


def private_stack_settings(data_dir: Path, **overrides: Any) -> StackSettings:
    """Settings for a private embedded stack in ``data_dir`` on free ports (never the defaults 9092/8123, so a
    stack someone else runs is never touched), ignoring real-server settings from the environment. For tests and
    side-by-side stacks."""
    from deploy.daemons import free_port_run

    nodes = int(overrides.get("kafka_brokers") or 1)
    kafka_port = free_port_run(2 * nodes)
    values: dict[str, Any] = dict(
        data_dir=data_dir,
        kafka_bootstrap_servers=None,
        clickhouse_url=None,
        embedded_kafka_port=kafka_port,
        kafka_brokers=nodes,
        embedded_clickhouse_port=free_port_run(1, avoid=range(kafka_port, kafka_port + 2 * nodes)),
    )
    values.update(overrides)
    return StackSettings(**values)
