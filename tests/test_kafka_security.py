"""Kafka SASL and TLS (schemas/kafka_security.py): the settings' checks without a broker, then the real thing on a
private Apache Kafka with a SASL_SSL listener whose CA and certificate this module makes with openssl, SCRAM users
made when its storage is formatted and a PLAIN user in its JAAS config (deploy/kafka_broker.SecureListener).

The collector, the worker and the sink run as subprocesses against the SASL_SSL listener only, and an event reaches
ClickHouse; with a wrong password each of them (and deliver) stops at start with one line naming the settings.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import EmbeddedKafka, free_port, unique, wait_for
from pydantic import SecretStr, ValidationError

from deploy.kafka_broker import SecureListener, write_secure_listener
from schemas.kafka_security import (
    aiokafka_security,
    faust_security,
    kafka_python_security,
    login_problem,
    security_environment,
    ssl_context,
)
from schemas.settings import PipelineSettings

SCRAM_USER = "closedloop"
SCRAM_PASSWORD = "scram-" + os.urandom(6).hex()
PLAIN_USER = "plain-client"
PLAIN_PASSWORD = "plain-" + os.urandom(6).hex()
WRONG_PASSWORD = "wrong-" + os.urandom(6).hex()


# -- certificates ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the test CA's certificate (PEM): what clients trust
    broker_keystore: Path  # the broker's key and certificate (127.0.0.1, localhost), signed by the CA
    client_cert: Path  # a client certificate signed by the CA, and its key
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: trusting it instead must fail


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"openssl {' '.join(args)} failed: {done.stderr[-800:]}"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command makes this test's certificates; install it (Debian: apt-get install openssl)")
    root = tmp_path_factory.mktemp("tls")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                 "-days", "2", "-subj", f"/CN=closedloop test {ca}", cwd=root)  # fmt: skip
    (root / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, subject in (("broker", "/CN=127.0.0.1"), ("client", "/CN=closedloop-client")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subject, cwd=root)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", "san.cnf", cwd=root)  # fmt: skip
    keystore = root / "broker-keystore.pem"  # Kafka's PEM keystore: the PKCS#8 key, then the certificate
    keystore.write_text((root / "broker.key").read_text() + (root / "broker.pem").read_text())
    return TlsFiles(root / "ca.pem", keystore, root / "client.pem", root / "client.key", root / "other-ca.pem")


# -- the settings alone ------------------------------------------------------------------------------------------


def _settings(**values) -> PipelineSettings:
    return PipelineSettings(**{"kafka_bootstrap_servers": "127.0.0.1:9", **values})


def _sasl_ssl(tls: TlsFiles, **values) -> PipelineSettings:
    return _settings(
        **{
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": SCRAM_USER,
            "kafka_sasl_password": SCRAM_PASSWORD,
            "kafka_ssl_cafile": tls.ca,
            **values,
        }
    )


def _refusal(**values) -> str:
    with pytest.raises(ValidationError) as refused:
        _settings(**values)
    return str(refused.value)


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    settings = _settings()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert kafka_python_security(settings) == aiokafka_security(settings) == faust_security(settings) == {}
    assert ssl_context(settings) is None
    assert login_problem(settings) is None  # nothing to refuse: no connection attempted


@pytest.mark.parametrize(
    ("values", "names"),
    [
        (  # SASL without its three settings
            {"kafka_security_protocol": "SASL_SSL"},
            ["CLOSEDLOOP_KAFKA_SASL_MECHANISM", "CLOSEDLOOP_KAFKA_SASL_USERNAME", "CLOSEDLOOP_KAFKA_SASL_PASSWORD"],
        ),
        (  # a password for a connection that does not log in
            {"kafka_sasl_username": "u", "kafka_sasl_password": "p"},
            ["CLOSEDLOOP_KAFKA_SASL_USERNAME", "CLOSEDLOOP_KAFKA_SASL_PASSWORD", "SASL_SSL"],
        ),
        (  # a CA file for a connection without TLS
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_mechanism": "PLAIN",
                "kafka_sasl_username": "u",
                "kafka_sasl_password": "p",
                "kafka_ssl_cafile": "/etc/hostname",
            },
            ["CLOSEDLOOP_KAFKA_SSL_CAFILE", "SSL or SASL_SSL"],
        ),
        (  # a certificate without its key
            {"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "/etc/hostname"},
            ["CLOSEDLOOP_KAFKA_SSL_CERTFILE", "CLOSEDLOOP_KAFKA_SSL_KEYFILE"],
        ),
        (  # a CA file that is not there
            {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"},
            ["CLOSEDLOOP_KAFKA_SSL_CAFILE=/nonexistent/ca.pem: no such file"],
        ),
        (  # a file that is not PEM
            {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/etc/hostname"},
            ["The TLS files cannot be used", "CLOSEDLOOP_KAFKA_SSL_CAFILE must hold PEM certificates"],
        ),
        (  # an unknown mechanism
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "GSSAPI",
                "kafka_sasl_username": "u",
                "kafka_sasl_password": "p",
            },
            ["kafka_sasl_mechanism", "SCRAM-SHA-512"],
        ),
    ],
    ids=[
        "sasl-incomplete",
        "stray-password",
        "stray-cafile",
        "cert-without-key",
        "missing-cafile",
        "not-pem",
        "gssapi",
    ],  # fmt: skip
)
def test_a_bad_combination_is_refused_naming_the_settings(values: dict, names: list[str]) -> None:
    message = _refusal(**values)
    for name in names:
        assert name in message, message
    assert "input_value" not in message  # pydantic's echo of every input (passwords included) is off


def test_security_needs_a_real_kafka() -> None:
    with pytest.raises(ValidationError) as refused:
        PipelineSettings(kafka_bootstrap_servers=None, kafka_security_protocol="SSL")
    assert "CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS" in str(refused.value)
    assert "embedded" in str(refused.value)


def test_the_password_is_never_shown(tls_files: TlsFiles) -> None:
    settings = _sasl_ssl(tls_files)
    for shown in (repr(settings), str(settings), json.dumps(settings.model_dump(mode="json"))):
        assert SCRAM_PASSWORD not in shown
    assert isinstance(settings.kafka_sasl_password, SecretStr)
    # a refused combination does not echo it either
    message = _refusal(kafka_sasl_username=SCRAM_USER, kafka_sasl_password=SCRAM_PASSWORD)
    assert SCRAM_PASSWORD not in message
    assert SCRAM_PASSWORD not in repr(faust_security(settings)["broker_credentials"])


def test_each_library_gets_the_same_settings(tls_files: TlsFiles) -> None:
    settings = _sasl_ssl(tls_files, kafka_security_protocol="sasl_ssl", kafka_sasl_mechanism="scram-sha-512")
    python = kafka_python_security(settings)
    assert {k: v for k, v in python.items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": SCRAM_USER,
        "sasl_plain_password": SCRAM_PASSWORD,
    }
    assert isinstance(python["ssl_context"], ssl.SSLContext) and python["ssl_context"].check_hostname
    assert python["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert {k: v for k, v in aiokafka_security(settings).items() if k != "ssl_context"} == {
        k: v for k, v in python.items() if k != "ssl_context"
    }
    credentials = faust_security(settings)["broker_credentials"]
    assert (credentials.protocol.value, credentials.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (credentials.username, credentials.password) == (SCRAM_USER, SCRAM_PASSWORD)
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    plain = _settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username=PLAIN_USER,
        kafka_sasl_password=PLAIN_PASSWORD,
    )
    assert "ssl_context" not in kafka_python_security(plain)
    assert faust_security(plain)["broker_credentials"].protocol.value == "SASL_PLAINTEXT"
    tls_only = _settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=tls_files.ca,
        kafka_ssl_certfile=tls_files.client_cert,
        kafka_ssl_keyfile=tls_files.client_key,
        kafka_ssl_check_hostname=False,
    )
    assert set(kafka_python_security(tls_only)) == {"security_protocol", "ssl_context"}
    assert not kafka_python_security(tls_only)["ssl_context"].check_hostname
    assert faust_security(tls_only)["broker_credentials"].protocol.value == "SSL"


def test_child_processes_get_the_same_settings(tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username=PLAIN_USER,
        kafka_sasl_password=PLAIN_PASSWORD,
        kafka_ssl_cafile=tls_files.ca,
        kafka_ssl_certfile=tls_files.client_cert,
        kafka_ssl_keyfile=tls_files.client_key,
        kafka_ssl_check_hostname=False,
    )
    assert security_environment(_settings()) == {}
    environment = security_environment(settings)
    assert environment["CLOSEDLOOP_KAFKA_SASL_PASSWORD"] == PLAIN_PASSWORD
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    assert PipelineSettings() == settings


def test_a_client_certificate_must_match_its_key(tls_files: TlsFiles) -> None:
    message = _refusal(
        kafka_security_protocol="SSL", kafka_ssl_certfile=tls_files.client_cert, kafka_ssl_keyfile=tls_files.ca
    )
    assert "The TLS files cannot be used" in message and "CLOSEDLOOP_KAFKA_SSL_KEYFILE" in message


# -- on the real broker ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecureBroker:
    broker: EmbeddedKafka
    bootstrap: str  # the SASL_SSL listener: the only address the clients below are given
    tls: TlsFiles


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles) -> Iterator[SecureBroker]:
    broker = EmbeddedKafka(tmp_path_factory.mktemp("secure-kafka"))
    listener = SecureListener(
        protocol="SASL_SSL",
        port=free_port(),
        keystore=tls_files.broker_keystore,
        plain_users=((PLAIN_USER, PLAIN_PASSWORD),),
        scram_users=((SCRAM_USER, SCRAM_PASSWORD),),
    )
    write_secure_listener(broker.settings, listener)
    try:
        broker.start()
        yield SecureBroker(broker, f"127.0.0.1:{listener.port}", tls_files)
    finally:
        broker.stop()


def _secure_env(secure: SecureBroker, password: str = SCRAM_PASSWORD) -> dict[str, str]:
    return {
        "CLOSEDLOOP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CLOSEDLOOP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "CLOSEDLOOP_KAFKA_SASL_USERNAME": SCRAM_USER,
        "CLOSEDLOOP_KAFKA_SASL_PASSWORD": password,
        "CLOSEDLOOP_KAFKA_SSL_CAFILE": str(secure.tls.ca),
    }


@pytest.mark.kafka
@pytest.mark.parametrize(
    ("mechanism", "user", "password"),
    [("PLAIN", PLAIN_USER, PLAIN_PASSWORD), ("SCRAM-SHA-256", SCRAM_USER, SCRAM_PASSWORD)],
)
def test_kafka_python_and_aiokafka_log_in(
    secure_broker: SecureBroker, mechanism: str, user: str, password: str
) -> None:
    """A record produced with kafka-python comes back through aiokafka, both over SASL_SSL."""
    from aiokafka import AIOKafkaConsumer
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    settings = _settings(
        kafka_bootstrap_servers=secure_broker.bootstrap,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username=user,
        kafka_sasl_password=password,
        kafka_ssl_cafile=secure_broker.tls.ca,
    )
    assert login_problem(settings) is None
    topic = unique("secure")
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_servers, **kafka_python_security(settings))
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=settings.kafka_servers, acks="all", **kafka_python_security(settings))
    try:
        producer.send(topic, key=b"k", value=mechanism.encode()).get(timeout=30)
    finally:
        producer.close(timeout=10)

    async def read_back() -> bytes | None:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka_servers,
            auto_offset_reset="earliest",
            **aiokafka_security(settings),
        )
        await asyncio.wait_for(consumer.start(), 30)
        try:
            record = await asyncio.wait_for(consumer.getone(), 30)
            return record.value
        finally:
            await consumer.stop()

    assert asyncio.run(read_back()) == mechanism.encode()


@pytest.mark.kafka
def test_login_problem_names_what_the_broker_refused(secure_broker: SecureBroker) -> None:
    good = dict(
        kafka_bootstrap_servers=secure_broker.bootstrap,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=SCRAM_USER,
        kafka_sasl_password=SCRAM_PASSWORD,
        kafka_ssl_cafile=secure_broker.tls.ca,
    )
    assert login_problem(_settings(**good)) is None
    wrong = login_problem(_settings(**{**good, "kafka_sasl_password": WRONG_PASSWORD}), timeout=5)
    assert wrong is not None and "refused the login of user 'closedloop' with SCRAM-SHA-512" in wrong, wrong
    assert "CLOSEDLOOP_KAFKA_SASL_PASSWORD" in wrong and WRONG_PASSWORD not in wrong
    untrusted = login_problem(_settings(**{**good, "kafka_ssl_cafile": secure_broker.tls.other_ca}), timeout=5)
    assert untrusted is not None and "TLS handshake" in untrusted, untrusted
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted and "CLOSEDLOOP_KAFKA_SSL_CAFILE" in untrusted
    nobody = _settings(**{**good, "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    assert login_problem(nobody, timeout=2) is None  # no broker at all: each process waits its own way


@pytest.mark.kafka
def test_a_wrong_password_stops_each_process_at_start(secure_broker: SecureBroker, tmp_path: Path) -> None:
    """collector, worker, sink, deliver (and `closedloop up` on this real Kafka): exit status 1 within the bound,
    one line naming the settings, no traceback, no password."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    env.update(_secure_env(secure_broker, WRONG_PASSWORD))
    env.update(
        {
            "CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS": secure_broker.bootstrap,
            "CLOSEDLOOP_CLICKHOUSE_URL": "http://default:x@127.0.0.1:9/closedloop",  # never reached
            "CLOSEDLOOP_DATA_DIR": str(tmp_path / "data"),
            "CLOSEDLOOP_PORT": str(free_port()),
            "CLOSEDLOOP_WORKER_WEB_PORT": str(free_port()),
            "CLOSEDLOOP_TOPIC_PREFIX": unique("wrong"),
        }
    )
    started = time.monotonic()
    children = {
        name: subprocess.Popen(
            [sys.executable, "-m", "closedloop.cli", name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for name in ("collector", "worker", "sink", "deliver", "up")
    }
    outputs = {}
    try:
        for name, child in children.items():
            outputs[name] = child.communicate(timeout=max(1.0, 150 - (time.monotonic() - started)))[0]
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
    for name, child in children.items():
        output = outputs[name]
        assert child.returncode == 1, f"{name} exited {child.returncode}:\n{output[-2000:]}"
        assert "refused the login of user 'closedloop' with SCRAM-SHA-512" in output, f"{name}:\n{output[-2000:]}"
        assert "CLOSEDLOOP_KAFKA_SASL_PASSWORD" in output
        assert "Traceback" not in output, f"{name}:\n{output[-3000:]}"
        assert WRONG_PASSWORD not in output
    assert time.monotonic() - started < 150


@pytest.mark.kafka
@pytest.mark.clickhouse
@pytest.mark.e2e
def test_an_event_reaches_clickhouse_over_sasl_ssl_only(
    secure_broker: SecureBroker, clickhouse_http_url: str, unique_name: str, tmp_path: Path
) -> None:
    """The collector, the worker and the sink are given the SASL_SSL listener alone: a page view becomes an
    events row and a touch in ClickHouse."""
    from deploy.stack import clickhouse_request
    from deploy.topics import create_topics
    from simulator.demo_harness import PipelinePorts, PipelineProcesses, wait_group_active
    from simulator.senders import DEMO_SERVER_KEY
    from sinks.client import connect
    from sinks.migrate import migrate_up
    from sinks.settings import SinkSettings

    sink_group = f"{unique_name}-sink"
    settings = SinkSettings(
        data_dir=tmp_path / "data",
        kafka_bootstrap_servers=secure_broker.bootstrap,
        clickhouse_url=f"{clickhouse_http_url}/{unique_name}",
        topic_prefix=unique_name,
        sink_consumer_group=sink_group,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=SCRAM_USER,
        kafka_sasl_password=SCRAM_PASSWORD,
        kafka_ssl_cafile=secure_broker.tls.ca,
    )
    created = create_topics(settings)  # deploy/topics.py over SASL_SSL too
    assert settings.topics.events in created.created
    clickhouse_request(settings.clickhouse, f"CREATE DATABASE IF NOT EXISTS `{unique_name}`", timeout=30)
    migrate_up(settings)
    client = connect(settings)
    processes = PipelineProcesses(
        settings,
        PipelinePorts(collector=free_port(), worker_web=free_port()),
        extra_env={  # the security settings reach the processes through pipeline_environment
            "CLOSEDLOOP_SINK_CONSUMER_GROUP": sink_group,
            "CLOSEDLOOP_SINK_BATCH_SECONDS": "0.5",
        },
        die_with_parent=True,
    )
    try:
        processes.start()  # returns once the collector's /readyz says its producer is connected
        security = kafka_python_security(settings)
        worker_group = f"{unique_name}-worker"
        wait_group_active(settings.kafka_servers, worker_group, 120, processes.check_alive, security)
        wait_group_active(settings.kafka_servers, sink_group, 120, processes.check_alive, security)
        event = {
            "type": "page_view",
            "event_id": unique("pv"),
            "visitor_id": "visitor-secure",
            "url": "https://acme.test/?utm_source=linkedin&utm_medium=paid_social",
        }
        request = urllib.request.Request(
            f"{processes.collector_url}/v1/events",
            data=json.dumps(event).encode(),
            headers={"Content-Type": "application/json", "X-Closedloop-Key": DEMO_SERVER_KEY},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["accepted"] == 1

        def landed() -> tuple[int, int] | None:
            processes.check_alive()
            events = client.query(f"SELECT count() FROM events WHERE event_id = '{event['event_id']}'").result_rows
            touches = client.query("SELECT count() FROM touches FINAL WHERE visitor_id = 'visitor-secure'")
            counts = (events[0][0], touches.result_rows[0][0])
            return counts if counts == (1, 1) else None

        assert wait_for(landed, 120, "the page view's events row and touch in ClickHouse") == (1, 1)
    finally:
        processes.stop()
        client.close()
    for name in ("collector", "worker", "sink"):
        assert SCRAM_PASSWORD not in processes.log(name).read_text(errors="replace"), f"the {name} logged it"
    # `closedloop status` reaches the brokers through the SASL_SSL listener too, and does not show the password
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    env.update(_secure_env(secure_broker))
    env.update(
        {
            "CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS": secure_broker.bootstrap,
            "CLOSEDLOOP_CLICKHOUSE_URL": settings.clickhouse,
            "CLOSEDLOOP_DATA_DIR": str(tmp_path / "status"),
        }
    )
    shown = subprocess.run(
        [sys.executable, "-m", "closedloop.cli", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert SCRAM_PASSWORD not in shown.stdout + shown.stderr
    kafka = next(s for s in json.loads(shown.stdout)["services"] if s["name"] == "kafka")
    assert kafka["healthy"], kafka


def test_the_deployment_examples_name_real_settings_that_fit_together() -> None:
    """deploy/compose's .env.example and deploy/k8s's secrets.env.example show the settings commented out: once
    uncommented (with a CA file that exists) they are accepted as they stand."""
    root = Path(__file__).resolve().parent.parent
    for example in (root / "deploy" / "compose" / ".env.example", root / "deploy" / "k8s" / "secrets.env.example"):
        lines = [line.removeprefix("# ") for line in example.read_text().splitlines()]
        shown = dict(line.split("=", 1) for line in lines if line.startswith("CLOSEDLOOP_KAFKA_"))
        assert set(shown) == {
            "CLOSEDLOOP_KAFKA_SECURITY_PROTOCOL",
            "CLOSEDLOOP_KAFKA_SASL_MECHANISM",
            "CLOSEDLOOP_KAFKA_SASL_USERNAME",
            "CLOSEDLOOP_KAFKA_SASL_PASSWORD",
            "CLOSEDLOOP_KAFKA_SSL_CAFILE",
        }, example
        values = {name.removeprefix("CLOSEDLOOP_").lower(): value for name, value in shown.items()}
        assert values["kafka_ssl_cafile"].startswith("/etc/closedloop/")
        settings = _settings(**{**values, "kafka_ssl_cafile": None})
        assert settings.kafka_security_protocol == "SASL_SSL" and settings.kafka_sasl_mechanism == "SCRAM-SHA-512"


@pytest.mark.parametrize("command", ["status", "sink", "worker"])
def test_a_bad_combination_stops_the_command_readably(command: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    env.update(
        {
            "CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
            "CLOSEDLOOP_KAFKA_SASL_PASSWORD": WRONG_PASSWORD,
            "CLOSEDLOOP_DATA_DIR": str(tmp_path),
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "closedloop.cli", command], env=env, capture_output=True, text=True, timeout=60
    )
    output = " ".join((done.stdout + done.stderr).split())  # rich folds lines at the terminal's width
    assert done.returncode in (1, 2), output
    assert (
        "CLOSEDLOOP_KAFKA_SASL_PASSWORD set, but CLOSEDLOOP_KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not log in" in output
    )
    assert "Traceback" not in output and WRONG_PASSWORD not in output


@pytest.mark.kafka
def test_mutual_tls_needs_the_client_certificate(tls_files: TlsFiles, tmp_path: Path) -> None:
    """An SSL listener that requires a client certificate (signed by the test CA): kafka-python and aiokafka get
    in with CLOSEDLOOP_KAFKA_SSL_CERTFILE/_KEYFILE, and without them the start-time check names those settings."""
    from aiokafka import AIOKafkaProducer
    from kafka import KafkaAdminClient

    broker = EmbeddedKafka(tmp_path / "mtls-kafka")
    port = free_port()
    write_secure_listener(
        broker.settings,
        SecureListener(protocol="SSL", port=port, keystore=tls_files.broker_keystore, truststore=tls_files.ca),
    )
    try:
        broker.start()
        settings = _settings(
            kafka_bootstrap_servers=f"127.0.0.1:{port}",
            kafka_security_protocol="SSL",
            kafka_ssl_cafile=tls_files.ca,
            kafka_ssl_certfile=tls_files.client_cert,
            kafka_ssl_keyfile=tls_files.client_key,
        )
        assert login_problem(settings) is None
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_servers, **kafka_python_security(settings))
        try:
            assert [node["broker_id"] for node in admin.describe_cluster()["brokers"]] == [1]
        finally:
            admin.close()

        async def produce() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_servers, **aiokafka_security(settings))
            await asyncio.wait_for(producer.start(), 30)
            await producer.stop()

        asyncio.run(produce())
        without = _settings(
            kafka_bootstrap_servers=f"127.0.0.1:{port}", kafka_security_protocol="SSL", kafka_ssl_cafile=tls_files.ca
        )
        refused = login_problem(without, timeout=5)
        assert refused is not None and "TLS handshake" in refused, refused
        assert "CLOSEDLOOP_KAFKA_SSL_CERTFILE" in refused
    finally:
        broker.stop()
