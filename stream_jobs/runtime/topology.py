"""The worker's internal Kafka topics, named once here, so that the stack can create them before workers start.

Faust is configured never to create topics (``topic_allow_declare=False``) and to run without its leader topic
(``topic_disable_leader=True``): every topic the worker touches is either a pipeline topic
(``schemas.topics.Topics``) or one listed by :func:`internal_topics`. ``closedloop up`` and ``closedloop worker``
create both lists with the admin client.

Internal topics, all with the pipeline's partition count (Faust requires a table's changelog to have as many
partitions as the topic its agent consumes):

- ``{app_id}-{table}-changelog`` for each table (Faust's own naming): the state that a restarted worker recovers.
- ``{app_id}-crm-contacts``: CRM records re-keyed by ``<crm>:<contact id>``, so that the contacts table learns the
  contact -> lead mapping in the partition where contact-id-only CRM events wait for it.
- ``{app_id}-erasures``: ``closedloop erase``'s commands for the visitors and contacts tables, each keyed by the
  table's key so that it lands in that key's partition; ``{app_id}-erasure-results``: the worker's answers
  (``stream_jobs.rules.erasure``).
"""

from __future__ import annotations

from schemas.settings import PipelineSettings
from schemas.topics import INTERNAL, STATE, TopicSpec

VISITORS_TABLE = "visitors"
CONTACTS_TABLE = "contacts"
LEADS_TABLE = "leads"
SCORES_TABLE = "scores"
COUNTER_WINDOWS = {"1m": 60.0, "1h": 3600.0, "today": 86400.0}  # window name -> tumbling size in seconds
COUNTER_EXPIRES = {"1m": 3600.0, "1h": 2 * 86400.0, "today": 8 * 86400.0}  # how long closed windows are kept


def counter_table(window: str) -> str:
    """Name of the windowed counters table for one window (``1m``, ``1h``, ``today``)."""
    return f"counters-{window}"


TABLES = (VISITORS_TABLE, CONTACTS_TABLE, LEADS_TABLE, SCORES_TABLE, *(counter_table(w) for w in COUNTER_WINDOWS))


def app_id_for(settings: PipelineSettings) -> str:
    """The Faust app id: ``WorkerSettings.app_id`` when given worker settings, else ``{prefix}-worker``."""
    return getattr(settings, "app_id", None) or f"{settings.topic_prefix}-worker"


def changelog_topic(app_id: str, table: str) -> str:
    """Faust's name for a table's changelog topic."""
    return f"{app_id}-{table}-changelog"


def crm_contacts_topic(app_id: str) -> str:
    """Internal repartition topic of CRM records keyed by ``<crm>:<contact id>``."""
    return f"{app_id}-crm-contacts"


def erasures_topic(app_id: str) -> str:
    """Internal topic of erase commands for the visitors and contacts tables, keyed by the table's key."""
    return f"{app_id}-erasures"


def erasure_results_topic(app_id: str) -> str:
    """Internal topic of the worker's answers to ``closedloop erase``, keyed by the request id."""
    return f"{app_id}-erasure-results"


def internal_topics(settings: PipelineSettings) -> list[TopicSpec]:
    """Every topic the worker uses that ``settings.topics.specs()`` does not list, to create before it starts."""
    app_id = app_id_for(settings)
    specs = [
        TopicSpec(
            changelog_topic(app_id, VISITORS_TABLE),
            "visitor_id",
            STATE,
            doc="visitors table: session, recent touches, page summary, identity links",
        ),
        TopicSpec(
            changelog_topic(app_id, CONTACTS_TABLE),
            "<crm>:<contact id>",
            STATE,
            doc="contacts table: CRM contact -> lead id, and CRM events waiting for it",
        ),
        TopicSpec(
            changelog_topic(app_id, LEADS_TABLE),
            "lead_id",
            STATE,
            doc="leads table: merged journey, stages, emitted conversion versions",
        ),
        TopicSpec(
            changelog_topic(app_id, SCORES_TABLE),
            "lead_id",
            STATE,
            doc="scores table: each lead's scored activity, stage, score and readiness cycle",
        ),
    ]
    for window in COUNTER_WINDOWS:
        # A window's keys never come back once it has expired: the changelog deletes them too, as Faust's own
        # windowed changelogs do, or it would grow by every closed window forever.
        specs.append(
            TopicSpec(
                changelog_topic(app_id, counter_table(window)),
                "stage, window",
                STATE,
                doc=f"conversion counters, {window} tumbling windows",
                retention_seconds=COUNTER_WINDOWS[window] + COUNTER_EXPIRES[window],
            )
        )
    specs.append(
        TopicSpec(
            crm_contacts_topic(app_id),
            "<crm>:<contact id>",
            INTERNAL,
            doc="CRM records re-keyed by contact id (internal)",
        )
    )
    specs.append(
        TopicSpec(
            erasures_topic(app_id),
            "visitor id or <crm>:<contact id>",
            INTERNAL,
            doc="closedloop erase: commands for the visitors and contacts tables",
        )
    )
    specs.append(
        TopicSpec(
            erasure_results_topic(app_id), "request id", INTERNAL, doc="closedloop erase: what the worker removed"
        )
    )
    return specs
