"""Create every topic the pipeline uses, before anything produces: idempotent, compacted where state lives.

Nothing in closedloop relies on broker-side auto-creation: a topic created by accident gets the broker's default
partition count and cleanup policy, and a typo in a topic name would silently create a new one.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass

from schemas.settings import PipelineSettings
from schemas.topics import TopicSpec


@dataclass(frozen=True)
class TopicsResult:
    created: list[str]
    existing: list[str]


def pipeline_topic_specs(settings: PipelineSettings) -> list[TopicSpec]:
    """The contract's topics plus the stream jobs' internal ones (Faust changelogs), when that module exists."""
    specs = list(settings.topics.specs())
    specs.extend(_internal_specs(settings))
    seen: set[str] = set()
    unique = []
    for spec in specs:
        if spec.name not in seen:
            seen.add(spec.name)
            unique.append(spec)
    return unique


def _internal_specs(settings: PipelineSettings) -> list[TopicSpec]:
    try:
        topology = importlib.import_module("stream_jobs.topology")
    except ModuleNotFoundError as error:
        if error.name not in ("stream_jobs.topology", "stream_jobs"):
            raise
        return []
    internal_topics = getattr(topology, "internal_topics", None)
    if internal_topics is None:
        return []
    return [_as_spec(item) for item in internal_topics(settings)]


def _as_spec(item: object) -> TopicSpec:
    """Accept a TopicSpec, a bare name (changelogs are compacted), or anything with name/compacted attributes."""
    if isinstance(item, TopicSpec):
        return item
    if isinstance(item, str):
        return TopicSpec(item, "table key", compacted=item.endswith("-changelog"), doc="stream jobs internal")
    name = getattr(item, "name")
    return TopicSpec(name, getattr(item, "key", ""), compacted=bool(getattr(item, "compacted", False)))


def create_topics(bootstrap_servers: str, specs: Iterable[TopicSpec], partitions: int,
                  replication_factor: int = 1, timeout: float = 15.0) -> TopicsResult:
    """Create the topics that do not exist yet; existing ones are left as they are (their data too)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    specs = list(specs)
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers.split(","),
        request_timeout_ms=int(timeout * 1000),
        bootstrap_timeout_ms=int(timeout * 1000),
        client_id="closedloop-topics",
    )
    try:
        present = set(admin.list_topics())
        missing = [spec for spec in specs if spec.name not in present]
        created: list[str] = []
        for spec in missing:
            configs = {"cleanup.policy": "compact"} if spec.compacted else {}
            try:
                admin.create_topics(
                    [NewTopic(spec.name, partitions, replication_factor, topic_configs=configs)],
                    timeout_ms=int(timeout * 1000),
                )
                created.append(spec.name)
            except TopicAlreadyExistsError:
                # Another process created it between our listing and our request: that is fine.
                present.add(spec.name)
        existing = [spec.name for spec in specs if spec.name not in created]
        return TopicsResult(created=created, existing=existing)
    finally:
        admin.close()
