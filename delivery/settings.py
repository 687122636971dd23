"""Settings of ``closedloop deliver`` (``CLOSEDLOOP_DELIVERY_*``): which kinds go where, and each destination's
address and secret. Secrets are ``SecretStr``: their repr is masked, so a logged settings object holds none."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from schemas.settings import PipelineSettings

DESTINATIONS = ("webhook", "slack", "hubspot", "pipedrive", "meta", "linkedin")


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
    delivery_hubspot_token: SecretStr | None = Field(
        None, description="HubSpot private app token (scopes crm.objects.contacts.read/write); unset = off."
    )
    delivery_hubspot_url: str = Field("https://api.hubapi.com", description="HubSpot's API base URL.")
    delivery_hubspot_owner_id: str | None = Field(None, description="HubSpot user the tasks are assigned to.")
    delivery_hubspot_kinds: list[str] = Field(["sales_ready", "buying_signal"])
    delivery_pipedrive_token: SecretStr | None = Field(None, description="Pipedrive API token; unset = off.")
    delivery_pipedrive_url: str | None = Field(
        None, description="Your Pipedrive company's API base URL, e.g. https://acme.pipedrive.com."
    )
    delivery_pipedrive_activity_type: str = Field("task", min_length=1, description="Activity type key, e.g. call.")
    delivery_pipedrive_kinds: list[str] = Field(["sales_ready", "buying_signal"])

    # Ad platforms' conversion APIs (docs/ADS.md): fed from the conversions topic by the ad feed.
    delivery_meta_pixel_id: str | None = Field(None, description="Meta dataset (pixel) id; with the token = on.")
    delivery_meta_token: SecretStr | None = Field(None, description="Meta Conversions API access token.")
    delivery_meta_url: str = Field("https://graph.facebook.com", description="Meta Graph API base URL.")
    delivery_meta_api_version: str = Field("v21.0", pattern=r"^v\d+\.\d+$", description="Graph API version.")
    delivery_meta_event_names: dict[str, str] = Field(
        {"sql": "Lead", "customer": "Purchase"}, description="Stage -> Meta event name; only these stages go."
    )
    delivery_meta_test_event_code: str | None = Field(None, description="Events Manager test code, for trials.")
    delivery_meta_kinds: list[str] = Field(["meta_conversion"])
    delivery_linkedin_token: SecretStr | None = Field(
        None, description="LinkedIn access token (scope rw_conversions); with conversions = on."
    )
    delivery_linkedin_url: str = Field("https://api.linkedin.com", description="LinkedIn API base URL.")
    delivery_linkedin_version: str = Field("202506", pattern=r"^\d{6}$", description="LinkedIn-Version (YYYYMM).")
    delivery_linkedin_conversions: dict[str, str] = Field(
        {}, description="Stage -> conversion rule id or URN (urn:lla:llaPartnerConversion:<id>); only these go."
    )
    delivery_linkedin_kinds: list[str] = Field(["linkedin_conversion"])
    delivery_ad_feed_group: str = Field(
        "closedloop-ad-feed", min_length=1, description="Consumer group of the ad feed (conversions -> outbox)."
    )

    @model_validator(mode="after")
    def _pipedrive_needs_its_url(self) -> DeliverySettings:
        if self.delivery_pipedrive_token and not self.delivery_pipedrive_url:
            raise ValueError(
                "CLOSEDLOOP_DELIVERY_PIPEDRIVE_TOKEN is set but CLOSEDLOOP_DELIVERY_PIPEDRIVE_URL is not: set it to "
                "your company's address, e.g. https://acme.pipedrive.com"
            )
        return self

    def routes(self, kind: str) -> list[str]:
        """The configured destinations a message of this kind goes to, in a fixed order."""
        out: list[str] = []
        if self.delivery_webhook_url and self.delivery_webhook_secret and kind in self.delivery_webhook_kinds:
            out.append("webhook")
        if self.delivery_slack_webhook_url and kind in self.delivery_slack_kinds:
            out.append("slack")
        if self.delivery_hubspot_token and kind in self.delivery_hubspot_kinds:
            out.append("hubspot")
        if self.delivery_pipedrive_token and self.delivery_pipedrive_url and kind in self.delivery_pipedrive_kinds:
            out.append("pipedrive")
        if self.meta_on and kind in self.delivery_meta_kinds:
            out.append("meta")
        if self.linkedin_on and kind in self.delivery_linkedin_kinds:
            out.append("linkedin")
        return out

    @property
    def meta_on(self) -> bool:
        return bool(self.delivery_meta_pixel_id and self.delivery_meta_token)

    @property
    def linkedin_on(self) -> bool:
        return bool(self.delivery_linkedin_token and self.delivery_linkedin_conversions)

    def ad_stages(self) -> dict[str, list[str]]:
        """The stages each configured ad platform takes: what the ad feed puts on the outbox."""
        out = {}
        if self.meta_on:
            out["meta"] = sorted(self.delivery_meta_event_names)
        if self.linkedin_on:
            out["linkedin"] = sorted(self.delivery_linkedin_conversions)
        return out
