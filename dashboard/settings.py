"""Settings of ``closedloop dashboard`` (``CLOSEDLOOP_`` environment variables)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from schemas.settings import PipelineSettings


class DashboardSettings(PipelineSettings):
    """Where the dashboard listens, who may read it, and where the live counters come from."""

    dashboard_host: str = Field("127.0.0.1", min_length=1, description="Interface to bind; loopback by default.")
    dashboard_port: int = Field(8080, ge=1, le=65535, description="Port of the dashboard.")
    dashboard_token: SecretStr | None = Field(
        None,
        description="Required when the dashboard binds to a non-loopback address: sent as 'Authorization: Bearer "
        "TOKEN', or as the password of HTTP Basic auth (any user name). When set, every request needs it.",
    )
    dashboard_counters_url: str | None = Field(
        None, description="The worker's web server (its /counters/); unset = the worker's settings' address."
    )
    dashboard_live_interval_seconds: float = Field(
        1.0, ge=0.2, le=60, description="How often the live page polls the worker's counters."
    )
    dashboard_live_max_seconds: float = Field(
        3600.0, gt=0, le=86400, description="A live stream ends after this long; the browser reconnects by itself."
    )

    @property
    def token(self) -> str | None:
        return self.dashboard_token.get_secret_value() if self.dashboard_token else None
