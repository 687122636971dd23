"""The contract of closedloop: every event, every stream output, topic names and serialization.

Every other package (collector, stream_jobs, sinks, deploy) imports from here; this package imports none of them.
"""

from schemas.events import (
    CrmStatusChange,
    Envelope,
    EventPayload,
    Identify,
    LifecycleStage,
    PageView,
    SpendRow,
)
from schemas.outputs import (
    AttributionModel,
    Conversion,
    Credit,
    DeadLetter,
    IdentityLink,
    Lead,
    Touch,
)
from schemas.topics import Topics

__all__ = [
    "AttributionModel",
    "Conversion",
    "Credit",
    "CrmStatusChange",
    "DeadLetter",
    "Envelope",
    "EventPayload",
    "Identify",
    "IdentityLink",
    "Lead",
    "LifecycleStage",
    "PageView",
    "SpendRow",
    "Topics",
    "Touch",
]
