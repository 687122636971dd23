"""Settings of ``closedloop deliver`` (``CLOSEDLOOP_DELIVERY_*``): which kinds go where, and each destination's
address and secret. Secrets are ``SecretStr``: their repr is masked, so a logged settings object holds none."""

from __future__ import annotations

from pydantic import Field, SecretStr

from schemas.settings import PipelineSettings

DESTINATIONS = ("webhook", "slack", "hubspot", "pipedrive")


class DeliverySettings(PipelineSettings):
    delivery_consumer_group: str = Field("closedloop-deliver", min_length=1, description="Kafka consumer group.")
    delivery_max_tries: int = Field(8, ge=1, le=100, description="Tries per destination before the dead letter.")
    delivery_retry_initial_seconds: float = Field(1.0, gt=0, description="Back-off of the first retry (jittered).")
    delivery_retry_max_seconds: float = Field(60.0, gt=0, description="Back-off ceiling.")
    delivery_max_retry_after_seconds: float = Field(300.0, gt=0, description="Longest Retry-After obeyed.")
    delivery_timeout_seconds: float = Field(10.0, gt=0, description="HTTP timeout of one try.")

    delivery_webhook_url: str | None = Field(None, description="Generic JSON webhook; unset = off.")
    delivery_webhook_secret: SecretStr | None = Field(None, description="HMAC-SHA256 key of its signature.")
    delivery_webhook_kinds: list[str] = Field(["sales_ready", "buying_signal"], description="Kinds it receives.")
    delivery_slack_webhook_url: SecretStr | None = Field(
        None, description="Slack incoming webhook URL (the URL is the secret); unset = off."
    )
    delivery_slack_kinds: list[str] = Field(["sales_ready", "buying_signal"])

    def routes(self, kind: str) -> list[str]:
        """The configured destinations a message of this kind goes to, in a fixed order."""
        out: list[str] = []
        if self.delivery_webhook_url and self.delivery_webhook_secret and kind in self.delivery_webhook_kinds:
            out.append("webhook")
        if self.delivery_slack_webhook_url and kind in self.delivery_slack_kinds:
            out.append("slack")
        return out
