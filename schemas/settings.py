"""Connection settings every component shares. Each component's own settings class extends this one.

Read once at an entry point (``Settings()`` reads ``CLOSEDLOOP_*`` environment variables) and passed down;
library code never reads the environment itself.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import DEFAULT_PREFIX, Topics

DEFAULT_DATABASE = "closedloop"
LOCAL_PASSWORD_FILE = "local-password"  # in the data directory: the embedded ClickHouse's and /diagnostics/' password
EMBEDDED_CLICKHOUSE_USER = "default"

# A development default, so that `closedloop up` works out of the box. Lead ids derived from it are only as
# secret as this string: set CLOSEDLOOP_LEAD_ID_KEY in any deployment that stores real emails.
DEV_LEAD_ID_KEY = "closedloop-development-key-change-me"


# kafka-python backs off reconnects exponentially up to 30 s by default, and its metadata refresh waits out the same
# back-off even once a connection works again: after a broker outage of 15 s or more the sink stayed idle for up to
# a minute after the broker was back (a restarted KRaft broker fences the old leader epoch, so fetches fail until the
# metadata is refreshed; tests/faults/test_broker_pipeline.py). 1 s is the Java client's reconnect.backoff.max.ms.
# Every kafka-python client of the product (sink, deliver) sets it.
KAFKA_RECONNECT_BACKOFF_MAX_MS = 1000


class PipelineSettings(BaseSettings):
    """Where Kafka and ClickHouse are, and where the embedded stack keeps its data.

    Leave ``kafka_bootstrap_servers`` / ``clickhouse_url`` unset to use the embedded broker / chDB endpoint that
    ``closedloop up`` starts; set them to point every component at real servers (then nothing embedded starts).
    """

    # hide_input_in_errors: a refused setting's message would otherwise print every input, passwords included.
    model_config = SettingsConfigDict(env_prefix="CLOSEDLOOP_", frozen=True, extra="ignore", hide_input_in_errors=True)

    data_dir: Path = Field(Path(".closedloop"), description="Embedded stack data, PID files and logs.")
    kafka_bootstrap_servers: str | None = Field(None, description="host:port[,host:port]; unset = embedded.")
    clickhouse_url: str | None = Field(None, description="http://user:password@host:8123/database; unset = embedded.")
    clickhouse_cluster: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="A ClickHouse cluster name (the servers' remote_servers): the migrations then run ON CLUSTER, "
        "with replicated local tables under Distributed ones (sinks/cluster_sql.py); unset = one server.",
    )
    embedded_kafka_port: int = Field(9092, ge=1, le=65525, description="Client port of the first embedded node.")
    kafka_brokers: Literal[1, 3] | None = Field(
        None,
        description="Nodes of the embedded Kafka: 1, or a 3-node cluster on one machine; unset = as many as "
        "the data directory's cluster has, else 1 (ignored with a real Kafka).",
    )
    embedded_clickhouse_port: int = Field(8123, ge=1, le=65535)
    topic_prefix: str = Field(DEFAULT_PREFIX, pattern=r"^[A-Za-z0-9._-]+$")
    partitions: int = Field(4, ge=1, le=256, description="Partitions of every topic the pipeline creates.")
    replication_factor: int | None = Field(
        None,
        ge=1,
        description="Replicas of every topic the pipeline creates; unset = 3 on a cluster of three "
        "or more embedded nodes, 1 on one, the broker's default.replication.factor on a "
        "real Kafka.",
    )
    retention_hours: float = Field(
        168.0,
        gt=0,
        description="How long source, internal and output topics keep records (time bound).",
    )
    retention_mb_per_partition: int = Field(
        1024,
        ge=1,
        description="How much each partition of those topics keeps, in MiB (size bound).",
    )
    dead_letter_retention_hours: float = Field(720.0, gt=0, description="How long dead letters are kept.")
    lead_id_key: SecretStr = Field(
        SecretStr(DEV_LEAD_ID_KEY),
        description="HMAC-SHA256 key that turns a normalised email into a lead id (schemas.identity.lead_id_for); "
        "the collector, the worker and `closedloop erase` must share it. Changing it re-keys every lead.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How every Kafka client of the product connects: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or "
        "SASL_SSL (SASL over TLS). Anything but PLAINTEXT needs a real Kafka (CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS).",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="The SASL mechanism (SASL_* protocols only)."
    )
    kafka_sasl_username: str | None = Field(None, description="The SASL user (SASL_* protocols only).")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="The SASL user's password (SASL_* protocols only); never logged or shown."
    )
    kafka_ssl_cafile: Path | None = Field(
        None,
        description="PEM file of the CA certificate(s) the brokers' certificates are checked against (SSL and "
        "SASL_SSL); unset = the system's CAs.",
    )
    kafka_ssl_certfile: Path | None = Field(
        None, description="PEM client certificate (chain) for brokers that require one (mutual TLS); with the key."
    )
    kafka_ssl_keyfile: Path | None = Field(None, description="PEM private key of kafka_ssl_certfile.")
    kafka_ssl_key_password: SecretStr | None = Field(None, description="Password of an encrypted kafka_ssl_keyfile.")
    kafka_ssl_check_hostname: bool = Field(
        True,
        description="Check that a broker's certificate names the host connected to (turn off only for "
        "brokers whose certificates lack their advertised names).",
    )
    compaction_segment_hours: float = Field(
        6.0,
        gt=0,
        description="State topics roll a segment this often, so compaction reaches recent records "
        "(and an erased lead's tombstone replaces its email) within about this time.",
    )

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        return (value.strip().upper() or None) if isinstance(value, str) else value

    @field_validator(
        "kafka_sasl_mechanism",
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        "kafka_ssl_key_password",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose passes ${VAR:-} as an empty string: the same as not setting the variable.
        return None if value == "" else value

    @model_validator(mode="after")
    def _kafka_security_consistent(self) -> PipelineSettings:
        from schemas.kafka_security import security_problems

        problems = security_problems(self)
        if problems:
            raise ValueError("Kafka security settings do not fit together:\n- " + "\n- ".join(problems))
        return self

    @property
    def lead_key_bytes(self) -> bytes:
        return self.lead_id_key.get_secret_value().encode("utf-8")

    @property
    def kafka_is_embedded(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def clickhouse_is_embedded(self) -> bool:
        return self.clickhouse_url is None

    @property
    def kafka_servers(self) -> str:
        """The bootstrap servers to connect to, embedded (node k listens on the first port + 2k) or real."""
        if self.kafka_bootstrap_servers:
            return self.kafka_bootstrap_servers
        return ",".join(f"127.0.0.1:{self.embedded_kafka_port + 2 * k}" for k in range(self.kafka_nodes))

    @property
    def kafka_nodes(self) -> int:
        """Nodes of the embedded Kafka: the setting, else what the data directory was formatted with, else 1."""
        if self.kafka_brokers is not None:
            return self.kafka_brokers
        try:
            return int(json.loads((self.data_dir / "kafka" / "cluster.json").read_text())["nodes"])
        except (OSError, ValueError, KeyError, TypeError):
            return 1

    @property
    def topic_replication_factor(self) -> int:
        """The replication factor to create topics with; -1 asks a real Kafka for its own default."""
        if self.replication_factor is not None:
            return self.replication_factor
        return min(3, self.kafka_nodes) if self.kafka_is_embedded else -1

    @property
    def local_password_file(self) -> Path:
        """The data directory's password: user ``default`` of the embedded ClickHouse, and the worker's
        ``/diagnostics/``. Created by ``closedloop up`` (``ensure_local_password``)."""
        return self.data_dir.expanduser() / LOCAL_PASSWORD_FILE

    @property
    def clickhouse(self) -> str:
        """The ClickHouse HTTP URL to connect to: ``clickhouse_url`` as given, or the embedded endpoint with the
        data directory's password (empty while ``closedloop up`` has not made one: the endpoint then says so)."""
        if self.clickhouse_url:
            return self.clickhouse_url
        password = quote(read_local_password(self.local_password_file) or "", safe="")
        return (
            f"http://{EMBEDDED_CLICKHOUSE_USER}:{password}@127.0.0.1:{self.embedded_clickhouse_port}/{DEFAULT_DATABASE}"
        )

    @property
    def clickhouse_database(self) -> str:
        return urlsplit(self.clickhouse).path.strip("/") or DEFAULT_DATABASE

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def ensure_data_dir(self) -> int | None:
        """Create the data directory readable by its owner only, or tighten it (see ``make_private_dir``)."""
        return make_private_dir(self.data_dir.expanduser())


def make_private_dir(path: Path) -> int | None:
    """Create ``path`` with mode 0700, or set an existing one to 0700: it holds raw events, the spool, logs and the
    local password. Returns the old mode when an existing directory was looser (for the caller to say so), else
    None."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(0o700)
        return mode
    return None


def read_local_password(path: Path) -> str | None:
    """The password kept in ``path``, or None when the file is missing, empty or unreadable."""
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def ensure_local_password(path: Path) -> str:
    """The password in ``path``; a new random one (mode 0600, in a 0700 directory) when there is none.

    Written to a temporary file and linked into place, so two processes starting at once agree on one password and
    nobody reads a half-written file.
    """
    make_private_dir(path.parent)
    existing = read_local_password(path)
    if existing:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)
        return existing
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(secrets.token_urlsafe(24) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            if read_local_password(path) is None:  # an empty file left by hand: replace it
                os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    password = read_local_password(path)
    if password is None:
        raise OSError(f"cannot read the password in {path}")
    return password
