"""Every Kafka topic the pipeline uses, its partition key and its cleanup policy: defined once, here.

Topic names carry a prefix so that tests (and several pipelines on one cluster) never share a topic.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "closedloop"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str  # what the partition key is, in words; the producers use exactly this
    compacted: bool = False
    doc: str = ""


@dataclass(frozen=True)
class Topics:
    """Topic names for one pipeline. ``Topics("test_abc")`` gives a fresh, non-overlapping set."""

    prefix: str = DEFAULT_PREFIX

    # Source topics: written by the collector and the CSV importers.
    @property
    def events(self) -> str:
        """Page views and identify events, keyed by visitor id (so one visitor's events stay in order)."""
        return f"{self.prefix}.events"

    @property
    def crm(self) -> str:
        """CRM status changes, keyed by lead key (normalised email, or '<crm>:<contact id>')."""
        return f"{self.prefix}.crm"

    @property
    def spend(self) -> str:
        """Marketing spend rows, keyed by 'date|channel|source|medium|campaign'."""
        return f"{self.prefix}.spend"

    # Internal topic of the stream jobs.
    @property
    def lead_events(self) -> str:
        """Identity links, touches of identified visitors and CRM changes re-keyed by lead id."""
        return f"{self.prefix}.lead-events"

    # Outputs: read by the sinks.
    @property
    def touches(self) -> str:
        return f"{self.prefix}.touches"

    @property
    def identity_links(self) -> str:
        return f"{self.prefix}.identity-links"

    @property
    def leads(self) -> str:
        """Lead records (lead id -> raw email), compacted: the newest record per lead is kept."""
        return f"{self.prefix}.leads"

    @property
    def conversions(self) -> str:
        return f"{self.prefix}.conversions"

    @property
    def credits(self) -> str:
        return f"{self.prefix}.credits"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}.dead-letters"

    def specs(self) -> list[TopicSpec]:
        """Every topic ``closedloop up`` creates, in the order data flows."""
        return [
            TopicSpec(self.events, "visitor_id", doc="page views and identify events"),
            TopicSpec(self.crm, "lead key (email or crm:contact id)", doc="CRM status changes"),
            TopicSpec(self.spend, "date|channel|source|medium|campaign", doc="marketing spend"),
            TopicSpec(self.lead_events, "lead_id", doc="stream jobs' repartition by lead"),
            TopicSpec(self.touches, "visitor_id", doc="touches (session starts)"),
            TopicSpec(self.identity_links, "lead_id", doc="visitor -> lead links"),
            TopicSpec(self.leads, "lead_id", compacted=True, doc="lead id -> raw email"),
            TopicSpec(self.conversions, "lead_id", doc="lifecycle milestones"),
            TopicSpec(self.credits, "conversion_id", doc="attribution credits"),
            TopicSpec(self.dead_letters, "source key", doc="records that could not be processed"),
        ]

    def source_topics(self) -> list[str]:
        return [self.events, self.crm, self.spend]

    def output_topics(self) -> list[str]:
        return [self.touches, self.identity_links, self.leads, self.conversions, self.credits]
