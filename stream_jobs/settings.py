"""Settings of the stream-jobs worker (``closedloop worker``): read once in the CLI command, passed down.

Environment variables carry the ``CLOSEDLOOP_`` prefix, like every component's: ``CLOSEDLOOP_LEAD_ID_KEY``,
``CLOSEDLOOP_LOOKBACK_DAYS``, ``CLOSEDLOOP_SESSION_TIMEOUT_SECONDS``, ``CLOSEDLOOP_WORKER_WEB_PORT``,
``CLOSEDLOOP_CHANNEL_RULES_FILE``, ``CLOSEDLOOP_PROCESSING_GUARANTEE``, ``CLOSEDLOOP_WORKER_APP_ID``,
``CLOSEDLOOP_SCORING_RULES_FILE``, ``CLOSEDLOOP_SCORE_ACTIVITY_LIMIT``, ``CLOSEDLOOP_CONTACT_HOLD_SECONDS``,
``CLOSEDLOOP_CONTACT_SWEEP_SECONDS``, ``CLOSEDLOOP_REEMIT_INTERVAL_SECONDS``,
``CLOSEDLOOP_WORKER_STORE``, ``CLOSEDLOOP_WORKER_PROCESSES``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field

from schemas.settings import DEV_LEAD_ID_KEY, PipelineSettings  # noqa: F401 - the lead id key is shared: PipelineSettings


class WorkerSettings(PipelineSettings):
    """What the Faust worker needs on top of the shared connection settings."""

    lookback_days: int = Field(90, ge=1, le=3650, description="Attribution lookback window, per conversion.")
    session_timeout_seconds: float = Field(
        1800.0, gt=0, description="Inactivity after which a visit starts a new touch (30 minutes by default)."
    )
    worker_web_host: str = Field("127.0.0.1", description="Interface of the worker's web server (counters JSON).")
    worker_web_port: int = Field(6066, ge=1, le=65535, description="Port of the worker's web server.")
    channel_rules_file: Path | None = Field(
        None, description="JSON file with user channel rules and extra site lists (see stream_jobs.rules.channels)."
    )
    processing_guarantee: Literal["exactly_once", "at_least_once"] = Field(
        "exactly_once",
        description="Kafka transactions (exactly_once, the default: docs/STREAMS.md) or plain commits (at_least_once).",
    )
    worker_app_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._-]+$", description="Faust app id (consumer group); default '{prefix}-worker'."
    )
    worker_store: Literal["rocksdb", "memory"] = Field(
        "rocksdb",
        description="Where table state lives: RocksDB files under the data directory (the default: state larger "
        "than memory, a restart reads it back) or memory (rebuilt from the changelogs at every start).",
    )
    worker_processes: int = Field(
        1,
        ge=1,
        le=256,
        description="Worker processes `closedloop worker` (and `closedloop demo`) starts on this machine, in one "
        "consumer group; process n serves its web port + n. More than the partitions leaves some idle.",
    )
    visitor_touch_limit: int = Field(
        50, ge=1, le=1000, description="Touches kept per visitor (the newest); older ones were already sent."
    )
    journey_touch_limit: int = Field(500, ge=1, le=10000, description="Touches kept per lead journey (the newest).")
    scoring_rules_file: Path | None = Field(
        None, description="JSON or TOML lead scoring rules (docs/SCORING.md); unset = the documented defaults."
    )
    contact_hold_seconds: float = Field(
        7 * 86400.0,
        gt=0,
        description="How long a CRM event of a contact with no known email waits for one before the dead letters.",
    )
    contact_sweep_seconds: float = Field(
        60.0, gt=0, description="Interval of the sweep that dead-letters CRM events held longer than that."
    )
    score_activity_limit: int = Field(
        200, ge=1, le=5000, description="Activities kept per lead for its score (the newest, within the window)."
    )
    reemit_interval_seconds: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="A lead re-emits a changed conversion at most once per this many seconds, newest version only "
        "(0: at every change). docs/STREAMS.md, 'Coalesced re-emission'.",
    )

    @property
    def app_id(self) -> str:
        """The Faust app id: consumer group and prefix of the changelog topics."""
        return self.worker_app_id or f"{self.topic_prefix}-worker"

    @property
    def state_dir(self) -> Path:
        """This process's Faust data directory (its RocksDB files): one per worker process on a machine, named by
        its web port, which no two processes on a machine share."""
        return self.data_dir / "worker" / self.app_id / str(self.worker_web_port)

    @property
    def lookback(self) -> timedelta:
        return timedelta(days=self.lookback_days)

    @property
    def contact_hold(self) -> timedelta:
        return timedelta(seconds=self.contact_hold_seconds)

    @property
    def session_timeout(self) -> timedelta:
        return timedelta(seconds=self.session_timeout_seconds)

    @property
    def web_url(self) -> str:
        return f"http://{self.worker_web_host}:{self.worker_web_port}"
