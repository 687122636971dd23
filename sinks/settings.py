"""Settings of the sink writer and the ClickHouse tooling (``CLOSEDLOOP_`` environment variables)."""

from __future__ import annotations

from pydantic import Field, field_validator

from schemas.events import STAGES
from schemas.outputs import DATA_DRIVEN_MODELS
from schemas.settings import PipelineSettings


class SinkSettings(PipelineSettings):
    """How the sink batches, which consumer group it joins, and how it backs off when ClickHouse is away."""

    sink_consumer_group: str = Field("closedloop-sink", min_length=1, description="Kafka consumer group of the sink.")
    sink_batch_rows: int = Field(10_000, ge=1, le=1_000_000, description="Flush after this many rows...")
    sink_batch_seconds: float = Field(1.0, gt=0, le=300, description="...or after this many seconds...")
    sink_batch_bytes: int | None = Field(
        None, ge=1, description="...or once its records' values hold this many bytes (unset: no byte bound)."
    )
    sink_commit_interval_seconds: float = Field(
        5.0,
        ge=0,
        le=300,
        description="Commit offsets at most this often while records keep coming (0 = after every batch); "
        "a sink that has caught up, and a stop, commit at once. A crash replays at most this much.",
    )
    sink_retry_initial_seconds: float = Field(
        0.2, gt=0, description="First back-off when ClickHouse fails, or an offset commit cannot reach the broker."
    )
    sink_retry_max_seconds: float = Field(10.0, gt=0, description="Back-off ceiling; retries never give up.")
    sink_max_poll_records: int = Field(10_000, ge=1, description="Records taken per poll.")
    sink_session_timeout_seconds: float = Field(
        45.0,  # kafka-python's default; 10 s evicted a busy in-process sink on the shared test machine
        ge=6,  # the broker's group.min.session.timeout.ms
        le=1800,  # its group.max.session.timeout.ms
        description="How long the group waits for a member that stopped heartbeating (a killed sink) before its "
        "partitions go to the others, or to the sink restarted in its place.",
    )
    sink_metrics_port: int | None = Field(None, ge=1, le=65535, description="Prometheus metrics port; unset = off.")
    sink_metrics_host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Address the metrics port binds: 127.0.0.1 (this machine only), or 0.0.0.0 in a container "
        "that Prometheus scrapes from another one. The metrics are counts only, nothing about a person.",
    )
    attribute_every_hours: float = Field(
        24.0,
        ge=0,
        le=24 * 31,
        description="The sink runs the data-driven models over the trailing period this often (0 = never; "
        "`closedloop attribute` by hand still works).",
    )
    attribute_days: int = Field(30, ge=1, le=3650, description="The trailing period: this many whole UTC days.")
    attribute_models: str = Field(
        "markov_1,shapley", description="Comma-separated: markov_1, markov_2, markov_3, shapley."
    )
    attribute_stages: str = Field("customer", description="Comma-separated stages, e.g. customer,lead.")
    attribute_first_delay_seconds: float = Field(
        300.0, ge=0, description="The schedule's first look comes this long after the sink starts."
    )

    @field_validator("attribute_models")
    @classmethod
    def _known_models(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in DATA_DRIVEN_MODELS]
        if unknown:
            raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(DATA_DRIVEN_MODELS)}")
        return ",".join(names)

    @field_validator("attribute_stages")
    @classmethod
    def _known_stages(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in STAGES]
        if unknown or not names:
            raise ValueError(f"unknown stage(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(STAGES)}")
        return ",".join(names)

    clickhouse_connect_timeout: float = Field(5.0, gt=0)
    clickhouse_query_timeout: float = Field(300.0, gt=0)
