"""The deployment files, checked without Docker or a cluster: the image's Dockerfile, deploy/compose/ against the
Compose Specification's JSON schema (vendored: tests/data/compose-spec/SOURCE.md), deploy/k8s/ against the
Kubernetes API schemas (kubernetes-validate, bundled schemas: offline), and what the files say of each other
(mounted files exist, secrets named in an example, scrape targets are services, settings are real settings)."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from collector.settings import CollectorSettings
from delivery.settings import DeliverySettings
from deploy.settings import StackSettings
from sinks.settings import SinkSettings
from stream_jobs.settings import WorkerSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "deploy" / "compose"
K8S_DIR = ROOT / "deploy" / "k8s"
COMPOSE_SCHEMA = Path(__file__).parent / "data" / "compose-spec" / "compose-spec.json"
K8S_VERSIONS = ("1.30.0", "1.37.0")  # the oldest still common, and the newest the package has
# ``CLOSEDLOOP_LOG_*`` are read by schemas.logs, not by a settings class
SETTINGS = {"LOG_LEVEL", "LOG_FORMAT"} | {
    name.upper()
    for cls in (CollectorSettings, WorkerSettings, SinkSettings, DeliverySettings, StackSettings)
    for name in cls.model_fields
}
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?+][^}]*)?\}")


def _compose() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())


def _env_example(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def _k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    return [
        (name, doc)
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((K8S_DIR / name).read_text())
        if doc
    ]


def _workloads() -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in _k8s_documents() if doc["kind"] in ("Deployment", "Job")}


def _closedloop_settings_named(environment: dict[str, Any] | list[str]) -> set[str]:
    names = environment if isinstance(environment, list) else list(environment)
    return {name.removeprefix("CLOSEDLOOP_") for name in names if name.startswith("CLOSEDLOOP_")}


# -- the image -------------------------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_pinned_non_root_and_installs_every_package_of_the_project():
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None
    # an exact version tag (x.y.z) or a digest, never a moving tag such as 3.11-slim
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?|python@sha256:[0-9a-f]{64}", base[1])
    stages = re.findall(r"^FROM \$\{PYTHON_IMAGE\} AS (\w+)$", text, re.MULTILINE)
    assert stages == ["build", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER 10001:10001$", runtime, re.MULTILINE) and "useradd" in runtime
    assert "COPY --from=build /opt/closedloop /opt/closedloop" in runtime
    assert 'ENTRYPOINT ["closedloop"]' in runtime
    assert re.search(r"pip install --no-deps \.", text), "the package is installed from the repository's files"
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    for pattern in packages:
        package = pattern.rstrip("*")
        assert f"COPY {package}/ {package}/" in text, package
        assert f"!{package}/" in dockerignore, package
    assert dockerignore[0:2] == [
        "# Only what the image installs goes into the build context (see Dockerfile); never data, secrets or caches.",
        "*",
    ]


# -- docker compose --------------------------------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification_schema():
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(_compose())]
    assert errors == []
    # the schema does refuse a wrong file (a guard against validating nothing)
    broken = _compose()
    broken["services"]["sink"]["restart"] = ["always"]
    broken["services"]["sink"]["no_such_key"] = 1
    assert len(list(validator.iter_errors(broken))) >= 2


def test_compose_runs_the_production_like_topology():
    services = _compose()["services"]
    kafka = {name: s for name, s in services.items() if s.get("image", "").startswith("apache/kafka:")}
    assert sorted(kafka) == ["kafka-1", "kafka-2", "kafka-3"]
    voters = {s["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for s in kafka.values()}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert sorted(s["environment"]["KAFKA_NODE_ID"] for s in kafka.values()) == ["1", "2", "3"]
    assert all(s["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller" for s in kafka.values())  # KRaft
    # the Kafka version the test suite and the benchmarks run against
    assert {s["image"] for s in kafka.values()} == {
        f"apache/kafka:{StackSettings.model_fields['kafka_version'].default}"
    }
    clickhouse = [n for n, s in services.items() if s.get("image", "").startswith("clickhouse/clickhouse-server:")]
    assert clickhouse == ["clickhouse-1", "clickhouse-2"]
    assert services["keeper"]["image"].startswith("clickhouse/clickhouse-keeper:")
    commands = {name: s.get("command", [None])[0] for name, s in services.items() if "closedloop" in s.get("image", "")}
    assert commands == {
        "init": "up",
        "collector-1": "collector",
        "collector-2": "collector",
        "worker-1": "worker",
        "worker-2": "worker",
        "sink": "sink",
        "deliver": "deliver",
    }
    for name in commands:  # every closedloop process waits for the topics and the migrations
        if name != "init":
            assert services[name]["depends_on"]["init"]["condition"] == "service_completed_successfully", name
    caddyfile = (COMPOSE_DIR / "caddy" / "Caddyfile").read_text()
    assert re.search(r"reverse_proxy collector-1:8000 collector-2:8000 \{", caddyfile)
    assert "./caddy/Caddyfile:/etc/caddy/Caddyfile:ro" in services["proxy"]["volumes"]
    partitions = services["worker-1"]["environment"]["CLOSEDLOOP_PARTITIONS"]
    assert int(re.sub(r"\$\{\w+:-(\d+)\}", r"\1", partitions)) >= 2  # two workers, each with partitions


def test_compose_settings_are_real_settings_and_every_secret_has_an_example():
    compose = _compose()
    for name, service in compose["services"].items():
        unknown = _closedloop_settings_named(service.get("environment", {})) - SETTINGS
        assert not unknown, f"{name}: no such setting: {unknown}"
    for example in ("collector.env.example", "deliver.env.example"):
        unknown = _closedloop_settings_named(list(_env_example(COMPOSE_DIR / example))) - SETTINGS
        assert not unknown, f"{example}: no such setting: {unknown}"
    required = set(re.findall(r"\$\{(\w+):\?", (COMPOSE_DIR / "compose.yaml").read_text()))
    assert required <= set(_env_example(COMPOSE_DIR / ".env.example")), "a required variable has no example"
    for service in compose["services"].values():
        for env_file in service.get("env_file", []):
            assert (COMPOSE_DIR / (env_file["path"] + ".example")).is_file(), env_file


def test_compose_secrets_are_ignored_by_git_and_mounted_files_exist():
    for name in (".env", "collector.env", "deliver.env"):
        ignored = subprocess.run(["git", "check-ignore", "-q", str(COMPOSE_DIR / name)], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{name} would be committed"
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (COMPOSE_DIR / source).exists(), f"{name} mounts {source}, which is missing"


def test_prometheus_scrapes_every_process_and_clickhouse_config_names_the_cluster():
    services = _compose()["services"]
    config = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
    targets = {
        target.split(":")[0]
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    processes = {n for n, s in services.items() if "closedloop" in s.get("image", "") and n not in ("init", "deliver")}
    assert processes | {"clickhouse-1", "clickhouse-2"} <= targets
    assert targets <= set(services) | {"localhost"}
    cluster_xml = ET.parse(COMPOSE_DIR / "clickhouse" / "config.d" / "cluster.xml").getroot()
    clusters = [child.tag for child in cluster_xml.find("remote_servers")]
    assert clusters == [services["sink"]["environment"]["CLOSEDLOOP_CLICKHOUSE_CLUSTER"]]
    replicas = [r.findtext("host") for r in cluster_xml.iterfind("remote_servers//replica")]
    assert replicas == ["clickhouse-1", "clickhouse-2"]
    assert cluster_xml.findtext("remote_servers/closedloop/shard/internal_replication") == "true"
    users = ET.parse(COMPOSE_DIR / "clickhouse" / "users.d" / "closedloop.xml").getroot()
    assert users.findtext("profiles/closedloop/distributed_product_mode") == "global"
    ET.parse(COMPOSE_DIR / "keeper" / "keeper.xml")
    json.loads((COMPOSE_DIR / "grafana" / "dashboards" / "closedloop.json").read_text())


def _exported_metric_names() -> set[str]:
    """Every metric name a closedloop process serves, as Prometheus sees it (a counter's ``_total``, a histogram's
    ``_bucket``): the collector's and the worker's from their real render functions, the sink's from its gauges."""
    from faust.sensors.monitor import Monitor

    from collector.metrics import CollectorMetrics
    from stream_jobs.runtime.metrics import render

    collector = CollectorMetrics()
    collector.accepted.labels("events", "page_view").inc()
    collector.rejected.labels("events", "bad").inc()
    collector.publish_seconds.observe(0.01)
    texts = [collector.render().decode(), render(Monitor(), 0, {})]
    lines = [line for text in texts for line in text.splitlines()]
    names = {line.split("{")[0].split(" ")[0] for line in lines if line[:1] != "#"}  # samples
    names |= {line.split(" ")[2] for line in lines if line.startswith("# TYPE ")}  # families without samples yet
    sink_source = (ROOT / "closedloop" / "commands" / "sink.py").read_text()
    return names | set(re.findall(r'"(closedloop_sink_[a-z_]+)"', sink_source))


def test_alert_rules_load_and_use_only_metrics_the_processes_export():
    config = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    rules = yaml.safe_load((COMPOSE_DIR / "prometheus" / "alerts.yml").read_text())
    exported = _exported_metric_names()
    assert {"closedloop_worker_partition_lag", "closedloop_sink_lag", "closedloop_collector_spool_bytes"} <= exported
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert len(alerts) >= 8 and len({rule["alert"] for rule in alerts}) == len(alerts)
    for rule in alerts:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("page", "warn") and rule["annotations"]["summary"], rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), rule["alert"]
        used = set(re.findall(r"\bclosedloop_[a-z_]+", rule["expr"]))
        assert used <= exported, (rule["alert"], used - exported)
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


# -- kubernetes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_validate_against_the_kubernetes_schemas(version: str):
    documents = _k8s_documents()
    assert {doc["kind"] for _, doc in documents} >= {
        "Namespace",
        "ConfigMap",
        "Job",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for name, doc in documents:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc}")
    # the Secrets kustomize generates from the examples
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    for generator in kustomization["secretGenerator"]:
        (env_file,) = generator["envs"]
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": generator["name"]},
            "stringData": _env_example(K8S_DIR / f"{env_file}.example"),
        }
        kubernetes_validate.validate(secret, version, strict=True)
    wrong = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, version, strict=True)


def test_k8s_workloads_have_probes_requests_budgets_and_scrape_annotations():
    documents = [doc for _, doc in _k8s_documents()]
    workloads = _workloads()
    for name, workload in workloads.items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            assert container["image"] == "closedloop", name  # kustomization.yaml's images: sets the tag
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
    collector = workloads["collector"]["spec"]["template"]["spec"]["containers"][0]
    assert collector["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert collector["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "livenessProbe" in workloads["worker"]["spec"]["template"]["spec"]["containers"][0]
    (hpa,) = [d for d in documents if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "collector"}
    budgets = {d["metadata"]["name"]: d for d in documents if d["kind"] == "PodDisruptionBudget"}
    assert set(budgets) == {"collector", "worker", "sink"}
    for name, budget in budgets.items():
        assert budget["spec"]["selector"]["matchLabels"] == workloads[name]["spec"]["selector"]["matchLabels"]
    for name in ("collector", "worker", "sink"):
        annotations = workloads[name]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        ports = {
            str(port["containerPort"])
            for container in workloads[name]["spec"]["template"]["spec"]["containers"]
            for port in container.get("ports", [])
        } | {e["value"] for c in workloads[name]["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
        assert annotations["prometheus.io/port"] in ports, name


def test_k8s_workers_stay_within_the_partitions_and_settings_and_secrets_are_real():
    documents = [doc for _, doc in _k8s_documents()]
    (config,) = [d for d in documents if d["kind"] == "ConfigMap"]
    partitions = int(config["data"]["CLOSEDLOOP_PARTITIONS"])
    workloads = _workloads()
    assert workloads["worker"]["spec"]["replicas"] <= partitions
    assert workloads["sink"]["spec"]["replicas"] <= partitions
    assert not [
        d
        for d in documents
        if d["kind"] == "HorizontalPodAutoscaler"
        and d["spec"]["scaleTargetRef"]["name"] in ("worker", "sink")
        and d["spec"]["maxReplicas"] > partitions
    ]
    unknown = _closedloop_settings_named(list(config["data"])) - SETTINGS
    assert not unknown, unknown
    generated = {
        g["name"]: g["envs"][0] for g in yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())["secretGenerator"]
    }
    for env_file in generated.values():
        unknown = _closedloop_settings_named(list(_env_example(K8S_DIR / f"{env_file}.example"))) - SETTINGS
        assert not unknown, f"{env_file}: {unknown}"
        ignored = subprocess.run(["git", "check-ignore", "-q", str(K8S_DIR / env_file)], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{env_file} would be committed"
    assert set(_env_example(K8S_DIR / "secrets.env.example")) >= {"CLOSEDLOOP_LEAD_ID_KEY", "CLOSEDLOOP_CLICKHOUSE_URL"}
    assert "CLOSEDLOOP_CRM_WEBHOOK_SECRET" in _env_example(K8S_DIR / "collector-secrets.env.example")
    for name, workload in workloads.items():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for source in container.get("envFrom", []):
                ref = source.get("secretRef") or source.get("configMapRef")
                assert ref["name"] in set(generated) | {"closedloop-config"}, (name, ref)
            unknown = _closedloop_settings_named([e["name"] for e in container.get("env", [])]) - SETTINGS
            assert not unknown, (name, unknown)
    assert config["data"]["CLOSEDLOOP_CLICKHOUSE_CLUSTER"] == "closedloop"
