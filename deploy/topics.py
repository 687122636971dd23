"""Create every topic the pipeline uses, before anything produces, with the configs of its kind; reconcile the
configs of topics that already exist.

Nothing in closedloop relies on broker-side auto-creation (the embedded Kafka has it off): a topic created by
accident gets the broker's default partition count and cleanup policy, and a typo in a topic name would silently
create a new one. The retention of each kind of topic comes from the settings (``schemas.settings``):

- source, internal and output topics keep ``retention_hours`` and ``retention_mb_per_partition``;
- dead letters keep ``dead_letter_retention_hours``;
- state topics (table changelogs, leads) are compacted, rolling a segment every ``compaction_segment_hours``;
  windowed tables' changelogs also delete expired windows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from schemas.kafka_security import kafka_python_security
from schemas.settings import PipelineSettings
from schemas.topics import DEAD_LETTERS, TopicSpec
from stream_jobs.runtime.topology import internal_topics

HOUR_MS = 3_600_000
TOMBSTONE_RETENTION_MS = 24 * HOUR_MS  # a deleted key's tombstone stays a day, so every reader sees the delete


@dataclass(frozen=True)
class TopicsResult:
    created: list[str]
    reconciled: list[str]  # existing topics whose configs were changed to the settings'
    existing: list[str]  # every topic that was there already (reconciled or not)


def pipeline_topic_specs(settings: PipelineSettings) -> list[TopicSpec]:
    """The contract's topics plus the stream jobs' internal ones (changelogs, repartition topics)."""
    specs: dict[str, TopicSpec] = {}
    for spec in [*settings.topics.specs(), *internal_topics(settings)]:
        specs.setdefault(spec.name, spec)
    return list(specs.values())


def topic_configs(spec: TopicSpec, settings: PipelineSettings) -> dict[str, str]:
    """The topic-level configs a topic of this kind gets."""
    if spec.compacted:
        segment_ms = str(int(settings.compaction_segment_hours * HOUR_MS))
        # max.compaction.lag.ms: the cleaner compacts a rolled segment within this time even when little of the
        # log is dirty, so an erased lead's old record (its email) leaves the leads topic within about two segment
        # times, not whenever half the log has changed (docs/PRIVACY.md).
        configs = {
            "cleanup.policy": "compact",
            "segment.ms": segment_ms,
            "max.compaction.lag.ms": segment_ms,
            "delete.retention.ms": str(TOMBSTONE_RETENTION_MS),
        }
        if spec.retention_seconds is not None:
            configs["cleanup.policy"] = "compact,delete"
            configs["retention.ms"] = str(int(spec.retention_seconds * 1000))
        return configs
    hours = settings.dead_letter_retention_hours if spec.kind == DEAD_LETTERS else settings.retention_hours
    retention_ms = int(hours * HOUR_MS)
    # Retention deletes whole segments: with Kafka's week-long segments a record could outlive its bound by a week.
    return {
        "cleanup.policy": "delete",
        "retention.ms": str(retention_ms),
        "retention.bytes": str(settings.retention_mb_per_partition * 1024 * 1024),
        "segment.ms": str(min(retention_ms, 24 * HOUR_MS)),
    }


def create_topics(
    settings: PipelineSettings, specs: Iterable[TopicSpec] | None = None, timeout: float = 15.0
) -> TopicsResult:
    """Create the topics that do not exist yet (``specs``, default: every pipeline topic) with the partitions,
    replication and configs of the settings; set the configs of existing topics where they differ. Existing data
    is kept; partition counts are never changed (that would move keys between partitions)."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    specs = list(pipeline_topic_specs(settings) if specs is None else specs)
    wanted = {spec.name: topic_configs(spec, settings) for spec in specs}
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_servers.split(","),
        request_timeout_ms=int(timeout * 1000),
        bootstrap_timeout_ms=int(timeout * 1000),
        client_id="closedloop-topics",
        **kafka_python_security(settings),
    )
    try:
        present = set(admin.list_topics())
        created: list[str] = []
        for spec in specs:
            if spec.name in present:
                continue
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            spec.name,
                            settings.partitions,
                            settings.topic_replication_factor,
                            topic_configs=wanted[spec.name],
                        )
                    ],
                    timeout_ms=int(timeout * 1000),
                )
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass  # another process created it between our listing and our request: reconciled below
        existing = [spec.name for spec in specs if spec.name not in created]
        reconciled = _reconcile(admin, {name: wanted[name] for name in existing}, ConfigResource, ConfigResourceType)
        return TopicsResult(created=created, reconciled=reconciled, existing=existing)
    finally:
        admin.close()


def _reconcile(admin, wanted: dict[str, dict[str, str]], ConfigResource, ConfigResourceType) -> list[str]:
    """Set the configs that differ from ``wanted`` on existing topics; returns the topics changed."""
    if not wanted:
        return []
    names = list(wanted)
    current = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in names], config_filter="all"
    ).get("topic", {})
    changes = []
    for name in names:
        have = {key: (entry or {}).get("value") for key, entry in (current.get(name) or {}).items()}
        differing = {key: value for key, value in wanted[name].items() if have.get(key) != value}
        if differing:
            changes.append(ConfigResource(ConfigResourceType.TOPIC, name, configs=differing))
    if changes:
        results = admin.alter_configs(changes, raise_on_unknown=False, incremental=True).get("topic", {})
        failed = {name: result for name, result in results.items() if result != "OK"}
        if failed:
            raise RuntimeError(f"Kafka refused the topic configs: {failed}")
    return sorted(change.name for change in changes)


def describe_topic_configs(settings: PipelineSettings, names: Iterable[str]) -> dict[str, dict[str, str | None]]:
    """The retention and compaction configs of topics as the broker reports them (for status and tests)."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    keys = ("cleanup.policy", "retention.ms", "retention.bytes", "segment.ms", "delete.retention.ms")
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_servers.split(","),
        client_id="closedloop-topics",
        **kafka_python_security(settings),
    )
    try:
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names], config_filter="all"
        ).get("topic", {})
    finally:
        admin.close()
    return {name: {key: (entries.get(key) or {}).get("value") for key in keys} for name, entries in described.items()}
