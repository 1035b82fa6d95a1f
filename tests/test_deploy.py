"""docker-compose.yml, the collector config, the Dockerfile and the Kubernetes manifests validate offline.

Schemas come from installed packages (the Compose specification vendored by check-jsonschema, the
Kubernetes API schemas of kubernetes-validate); `docker compose config`, `kubectl kustomize` and
hadolint run too where they are installed. On top of the schemas, the files must agree with each
other and with the settings the service really reads.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id
from pydantic import BaseModel, ConfigDict, Field

from moderator.broker import ensure_topics
from moderator.settings import Settings
from moderator.testing.samples import sample_posts
from tests.pipeline_helpers import collect

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
SETTING_NAMES = {f"MODERATOR_{name.upper()}" for name in Settings.model_fields}
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
MODERATOR_IMAGE_SERVICES = ("moderator", "review", "producer")

Doc = dict[str, Any]


def _compose() -> Doc:
    data: Doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _manifests() -> list[Doc]:
    return [doc for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def _one(kind: str, name: str | None = None) -> Doc:
    (doc,) = [d for d in _manifests() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return doc


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


# ----- docker-compose.yml --------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    schema = json.loads(files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(_compose())]
    assert errors == []


def test_compose_stack_is_wired_together() -> None:
    services: dict[str, Doc] = _compose()["services"]
    assert {"kafka", "redis", "otel-collector", "jaeger", *MODERATOR_IMAGE_SERVICES} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:"), "the official Apache Kafka image"
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, "KRaft"
    assert not any("zookeeper" in name for name in services)
    advertised = dict(item.split("://") for item in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(","))

    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert set(depends) <= set(services), f"{name} depends on an unknown service"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), f"{name} mounts missing {source}"
        if "build" in service:
            assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()

    for name in MODERATOR_IMAGE_SERVICES:
        env: dict[str, str] = services[name]["environment"]
        assert {k for k in env if k.startswith("MODERATOR_")} <= SETTING_NAMES, f"{name}: unknown setting"
        assert env["MODERATOR_KAFKA_IDEMPOTENT_PRODUCER"] == "true", "real Kafka: idempotent producer on"
        assert env["MODERATOR_KAFKA_BOOTSTRAP"] == advertised["PLAINTEXT"]
        assert urlsplit(env["MODERATOR_REDIS_URL"]).hostname == "redis"
        assert urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"]).hostname == "otel-collector"
    moderator = services["moderator"]
    assert moderator["command"] == ["serve"] and services["review"]["command"] == ["review"]
    port = moderator["environment"]["MODERATOR_METRICS_PORT"]
    assert f"127.0.0.1:{port}/ready" in " ".join(moderator["healthcheck"]["test"])
    assert f"{port}:{port}" in moderator["ports"]
    api_port = moderator["environment"]["MODERATOR_API_PORT"]
    assert moderator["environment"]["MODERATOR_API_HOST"] == "0.0.0.0" and f"{api_port}:{api_port}" in moderator["ports"]
    assert services["producer"]["depends_on"]["moderator"]["condition"] == "service_healthy"


def _compose_cli() -> list[str] | None:
    """Docker Compose v2, as the docker plugin or a standalone binary; `config` needs no engine."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) and "v2." in _run(*command, "version").stdout:
            return command
    return None


@pytest.mark.skipif(_compose_cli() is None, reason="Docker Compose v2 is not installed")
def test_docker_compose_config_accepts_the_file() -> None:
    result = _run(*(_compose_cli() or []), "-f", "docker-compose.yml", "config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_collector_pipelines_use_defined_components_and_reach_the_stack() -> None:
    config: Doc = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())
    for pipeline, parts in config["service"]["pipelines"].items():
        for section in ("receivers", "processors", "exporters"):
            assert set(parts.get(section, [])) <= set(config.get(section) or {}), f"{pipeline}: undefined {section}"
    services = _compose()["services"]
    assert config["exporters"]["otlp/jaeger"]["endpoint"].split(":")[0] in services
    (target,) = config["receivers"]["prometheus"]["config"]["scrape_configs"][0]["static_configs"][0]["targets"]
    assert target == f"moderator:{services['moderator']['environment']['MODERATOR_METRICS_PORT']}"
    otlp_port = urlsplit(services["moderator"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]).port
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(f":{otlp_port}")


# ----- deploy/Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_with_cpu_and_cuda_variants() -> None:
    commands = dockerfile.parse_file(str(ROOT / "deploy" / "Dockerfile"))
    stages = [c for c in commands if c.cmd == "FROM"]
    assert len(stages) >= 2
    final = commands[commands.index(stages[-1]):]
    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the runtime stage runs as a non-root user"
    assert any(c.cmd == "COPY" and "--from=build" in c.flags for c in final)
    assert any(c.cmd == "ARG" and c.value[0] == "VARIANT=cpu" for c in commands)
    install = next(c.original for c in commands if c.cmd == "RUN" and "VARIANT" in c.original)
    assert "cpu)" in install and "cuda)" in install
    assert [c.value for c in final if c.cmd in {"ENTRYPOINT", "CMD"}] == [("moderator",), ("serve",)]
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().split()
    kept = {line.rstrip("/") for line in ignore if line.startswith("!")}
    for copy in (c for c in commands if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)):
        for source in copy.value[:-1]:
            assert (ROOT / source).exists() and f"!{source.rstrip('/')}" in kept, f"{source} is not in the context"


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint is not installed")
def test_dockerfile_passes_hadolint() -> None:
    result = _run("hadolint", "--config", "deploy/hadolint.yaml", "deploy/Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


# ----- deploy/k8s ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_validate_against_the_api_schemas(version: str) -> None:
    core = [doc for doc in _manifests() if "/" not in doc["apiVersion"] or doc["apiVersion"].startswith("apps/")]
    assert {doc["kind"] for doc in core} == {"ConfigMap", "Secret", "Deployment", "Service"}
    for doc in core:
        kubernetes_validate.validate(doc, version, strict=True)


class _ScaleTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["Deployment"] = "Deployment"


KEDA_KAFKA_KEYS = {"bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
                   "offsetResetPolicy", "allowIdleConsumers", "scaleToZeroOnInvalidOffset", "excludePersistentLag",
                   "limitToPartitionsWithLag", "partitionLimitation", "version", "sasl", "tls"}


class _KafkaTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["kafka"]
    metadata: dict[str, str]


class _ScaledObjectSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scaleTargetRef: _ScaleTarget
    minReplicaCount: int = Field(ge=0)
    maxReplicaCount: int = Field(ge=1)
    pollingInterval: int = Field(ge=1)
    cooldownPeriod: int = Field(ge=0)
    triggers: list[_KafkaTrigger] = Field(min_length=1)


class _ScaledObject(BaseModel):
    """The part of KEDA's ScaledObject CRD this deployment uses (KEDA's schema is not installable here)."""

    apiVersion: Literal["keda.sh/v1alpha1"]
    kind: Literal["ScaledObject"]
    metadata: dict[str, str]
    spec: _ScaledObjectSpec


def test_manifests_agree_with_each_other_and_with_the_settings() -> None:
    config: dict[str, str] = _one("ConfigMap")["data"]
    secret: dict[str, str] = _one("Secret")["stringData"]
    assert {k for k in config if not k.startswith("OTEL_")} <= SETTING_NAMES
    assert set(secret) <= SETTING_NAMES
    assert config["MODERATOR_KAFKA_IDEMPOTENT_PRODUCER"] == "true"
    settings = Settings(_env_file=None, **{k.removeprefix("MODERATOR_").lower(): v  # type: ignore[arg-type]
                                            for k, v in {**config, **secret}.items() if k.startswith("MODERATOR_")})

    deployment = _one("Deployment")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["requests"]["nvidia.com/gpu"] == container["resources"]["limits"]["nvidia.com/gpu"]
    assert {ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]} == {
        _one("ConfigMap")["metadata"]["name"], _one("Secret")["metadata"]["name"]}
    port, api_port = container["ports"]
    assert port["containerPort"] == settings.metrics_port and settings.metrics_host == "0.0.0.0"
    assert api_port["containerPort"] == settings.api_port and settings.api_host == "0.0.0.0"
    probes = {name: container[name]["httpGet"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {p["port"] for p in probes.values()} == {port["name"]}
    assert (probes["livenessProbe"]["path"], probes["readinessProbe"]["path"]) == ("/health", "/ready")
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"

    for service, target in ((_one("Service", "moderator-metrics"), port), (_one("Service", "moderator-api"), api_port)):
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        assert service["spec"]["ports"][0]["targetPort"] == target["name"]

    scaled = _ScaledObject.model_validate(_one("ScaledObject"))
    assert scaled.spec.scaleTargetRef.name == deployment["metadata"]["name"]
    assert scaled.spec.minReplicaCount <= scaled.spec.maxReplicaCount <= settings.topic_partitions
    (trigger,) = scaled.spec.triggers
    assert set(trigger.metadata) <= KEDA_KAFKA_KEYS
    assert (trigger.metadata["bootstrapServers"], trigger.metadata["consumerGroup"], trigger.metadata["topic"]) == (
        settings.kafka_bootstrap, settings.consumer_group, settings.input_topic)
    assert int(trigger.metadata["lagThreshold"]) > 0

    kustomization: Doc = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_valid_manifests() -> None:
    result = _run("kubectl", "kustomize", "deploy/k8s")
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert {doc["metadata"]["namespace"] for doc in rendered} == {"moderation"}
    assert {doc["kind"] for doc in rendered} == {"ConfigMap", "Secret", "Deployment", "Service", "ScaledObject"}
    for doc in rendered:
        if doc["kind"] != "ScaledObject":
            kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)


# ----- deploy/producer.py --------------------------------------------------------------------------


async def test_sample_producer_sends_posts_that_carry_their_producer_span(settings: Settings) -> None:
    spec = importlib.util.spec_from_file_location("sample_producer", ROOT / "deploy" / "producer.py")
    assert spec is not None and spec.loader is not None
    producer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(producer)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    await ensure_topics(settings)

    posts = sample_posts(3, seed=5, prefix="produced")
    assert await producer.produce_round(settings, provider.get_tracer("test"), posts) == 3
    records = await collect(settings, settings.input_topic, 3)

    spans = {str((s.attributes or {})["messaging.kafka.message.key"]): s for s in exporter.get_finished_spans()}
    assert {r.key.decode() for r in records} == set(spans) == {p["post_id"] for p in posts}
    for record in records:
        span = spans[record.key.decode()].context
        expected = f"00-{format_trace_id(span.trace_id)}-{format_span_id(span.span_id)}-{span.trace_flags:02x}"
        assert dict(record.headers)["traceparent"].decode() == expected
    assert len({s.context.trace_id for s in spans.values()}) == 3, "one trace per post"
