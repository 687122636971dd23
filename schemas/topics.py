"""Every Kafka topic the pipeline uses, its partition key and its kind: defined once, here.

Topic names carry a prefix so that tests (and several pipelines on one cluster) never share a topic. The kind
decides the topic's retention (``deploy.topics.topic_configs``): source, internal and output topics keep a bounded
time and size, dead letters longer, and state topics are compacted (the newest record per key is kept).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "closedloop"


SOURCE = "source"  # written by the collector and importers
INTERNAL = "internal"  # the stream jobs' repartition topics
OUTPUT = "output"  # the stream jobs' results, read by the sink
STATE = "state"  # newest record per key is the truth: table changelogs, leads
DEAD_LETTERS = "dead-letters"
KINDS = (SOURCE, INTERNAL, OUTPUT, STATE, DEAD_LETTERS)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str  # what the partition key is, in words; the producers use exactly this
    kind: str = OUTPUT
    doc: str = ""
    retention_seconds: float | None = None  # a state topic whose keys expire (windowed tables): also deleted

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"topic {self.name}: kind {self.kind!r} is not one of {KINDS}")

    @property
    def compacted(self) -> bool:
        return self.kind == STATE


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
        """Attributed conversions (``schemas.outputs.Conversion`` with every model's credits), keyed by lead id."""
        return f"{self.prefix}.conversions"

    @property
    def credits(self) -> str:
        """One ``Credit`` record per credit, as workers before 2026-12-06 wrote them. The worker no longer writes it
        (the credits travel in the conversions); the sink still reads it, so that what an older worker left there
        during an upgrade is stored."""
        return f"{self.prefix}.credits"

    @property
    def scores(self) -> str:
        """:class:`schemas.outputs.LeadScore` records, one per score change, keyed by lead id."""
        return f"{self.prefix}.lead-scores"

    @property
    def sales_ready(self) -> str:
        """:class:`schemas.outputs.SalesReadyLead` records, one per lead and readiness cycle, keyed by lead id."""
        return f"{self.prefix}.sales-ready"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}.dead-letters"

    # Outbound: records for destinations outside the pipeline (CRMs, chat, webhooks), read by ``closedloop deliver``.
    @property
    def outbox(self) -> str:
        """:class:`schemas.outbox.OutboxMessage` records keyed by lead id: a queue with time retention."""
        return f"{self.prefix}.outbox"

    @property
    def outbox_dead(self) -> str:
        """Outbox messages a destination refused or never answered within its tries, with the reason."""
        return f"{self.prefix}.outbox-dead"

    @property
    def deliveries(self) -> str:
        """:class:`schemas.outbox.DeliveryStatus` records: how each (message, destination) ended; the sink writes
        them to the ``deliveries`` table."""
        return f"{self.prefix}.deliveries"

    @property
    def ad_feedback(self) -> str:
        """:class:`schemas.outbox.AdFeedback` records: how each conversion sent to an ad platform's API ended; the
        sink writes them to the ``ad_feedback`` table (docs/ADS.md)."""
        return f"{self.prefix}.ad-feedback"

    @property
    def erased_leads(self) -> str:
        """:class:`schemas.outbox.LeadErased` records keyed by lead id, written by ``closedloop erase`` (compacted):
        ``closedloop deliver`` sends nothing queued for a lead before its erasure."""
        return f"{self.prefix}.erased-leads"

    def specs(self) -> list[TopicSpec]:
        """Every topic ``closedloop up`` creates, in the order data flows."""
        return [
            TopicSpec(self.events, "visitor_id", SOURCE, doc="page views and identify events"),
            TopicSpec(self.crm, "lead key (email or crm:contact id)", SOURCE, doc="CRM status changes"),
            TopicSpec(self.spend, "date|channel|source|medium|campaign", SOURCE, doc="marketing spend"),
            TopicSpec(self.lead_events, "lead_id", INTERNAL, doc="stream jobs' repartition by lead"),
            TopicSpec(self.touches, "visitor_id", OUTPUT, doc="touches (session starts)"),
            TopicSpec(self.identity_links, "lead_id", OUTPUT, doc="visitor -> lead links"),
            TopicSpec(self.leads, "lead_id", STATE, doc="lead id -> raw email"),
            TopicSpec(self.conversions, "lead_id", OUTPUT, doc="lifecycle milestones with every model's credits"),
            TopicSpec(self.credits, "conversion_id", OUTPUT, doc="attribution credits of workers before 2026-12-06"),
            TopicSpec(self.scores, "lead_id", OUTPUT, doc="lead score changes with their breakdown"),
            TopicSpec(self.sales_ready, "lead_id", OUTPUT, doc="sales-ready leads, one per lead and cycle"),
            TopicSpec(self.dead_letters, "source key", DEAD_LETTERS, doc="records that could not be processed"),
            TopicSpec(self.outbox, "lead_id", OUTPUT, doc="messages for outbound destinations"),
            TopicSpec(self.outbox_dead, "lead_id", DEAD_LETTERS, doc="outbound deliveries that gave up"),
            TopicSpec(self.deliveries, "lead_id", OUTPUT, doc="how each outbound delivery ended"),
            TopicSpec(self.ad_feedback, "lead_id", OUTPUT, doc="conversions sent to ad platforms, how each ended"),
            TopicSpec(self.erased_leads, "lead_id", STATE, doc="erased leads: deliver drops what was queued for them"),
        ]

    def source_topics(self) -> list[str]:
        return [self.events, self.crm, self.spend]

    def output_topics(self) -> list[str]:
        return [
            self.touches,
            self.identity_links,
            self.leads,
            self.conversions,
            self.credits,
            self.scores,
            self.sales_ready,
        ]
