"""Connection settings every component shares. Each component's own settings class extends this one.

Read once at an entry point (``Settings()`` reads ``CLOSEDLOOP_*`` environment variables) and passed down;
library code never reads the environment itself.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import DEFAULT_PREFIX, Topics

DEFAULT_DATABASE = "closedloop"


class PipelineSettings(BaseSettings):
    """Where Kafka and ClickHouse are, and where the embedded stack keeps its data.

    Leave ``kafka_bootstrap_servers`` / ``clickhouse_url`` unset to use the embedded broker / chDB endpoint that
    ``closedloop up`` starts; set them to point every component at real servers (then nothing embedded starts).
    """

    model_config = SettingsConfigDict(env_prefix="CLOSEDLOOP_", frozen=True, extra="ignore")

    data_dir: Path = Field(Path(".closedloop"), description="Embedded stack data, PID files and logs.")
    kafka_bootstrap_servers: str | None = Field(None, description="host:port[,host:port]; unset = embedded.")
    clickhouse_url: str | None = Field(
        None, description="http://user:password@host:8123/database; unset = embedded."
    )
    embedded_kafka_port: int = Field(9092, ge=1, le=65535)
    embedded_clickhouse_port: int = Field(8123, ge=1, le=65535)
    topic_prefix: str = Field(DEFAULT_PREFIX, pattern=r"^[A-Za-z0-9._-]+$")
    partitions: int = Field(4, ge=1, le=256, description="Partitions of every topic the pipeline creates.")
    replication_factor: int = Field(1, ge=1)

    @property
    def kafka_is_embedded(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def clickhouse_is_embedded(self) -> bool:
        return self.clickhouse_url is None

    @property
    def kafka_servers(self) -> str:
        """The bootstrap servers to connect to, embedded or real."""
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.embedded_kafka_port}"

    @property
    def clickhouse(self) -> str:
        """The ClickHouse HTTP URL to connect to, embedded or real."""
        return self.clickhouse_url or f"http://default:@127.0.0.1:{self.embedded_clickhouse_port}/{DEFAULT_DATABASE}"

    @property
    def clickhouse_database(self) -> str:
        return urlsplit(self.clickhouse).path.strip("/") or DEFAULT_DATABASE

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)
