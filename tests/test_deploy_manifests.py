"""The production manifests (deploy/compose, deploy/k8s) agree with the code they deploy.

File checks only, no Docker engine or Kubernetes cluster: pinned images, RUNSTREAM_* names and
values that Settings accepts, commands their parsers accept, one ClickHouse cluster name, one
metrics port, the files the processors and the notifier read mounted where their settings point
(the webhooks from a Secret); and the init containers' `runstream migrate --wait` and `runstream
topics --wait` wait, with their pods' settings, for what the Jobs create (tests/test_cli_wait.py
tests the waiting itself).
"""

from __future__ import annotations

import json
import os
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from runstream import __version__, cli
from runstream.cli import SETTINGS_ARGS, build_parser
from runstream.processors.notifier import load_routes
from runstream.processors.rules import load_rules, loads_rules, toml_module
from runstream.schemas.topics import Topics
from runstream.settings import ENV_PREFIX, Settings
from runstream.sinks import clickhouse, migrations

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
K8S_DIR = DEPLOY / "k8s"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"
DOCKERIGNORE = COMPOSE_DIR / "Dockerfile.dockerignore"
PYPROJECT = DEPLOY.parent / "pyproject.toml"
CLUSTER_XML = COMPOSE_DIR / "clickhouse" / "cluster.xml"
KEEPER_XML = COMPOSE_DIR / "clickhouse" / "keeper.xml"
# What the shell would give compose for ${VAR}, so that the settings' values can be checked.
COMPOSE_VARS = {"CLICKHOUSE_PASSWORD": "pw", "CLICKHOUSE_CLUSTER_SECRET": "s"}
METRICS_URL = re.compile(r"http://127\.0\.0\.1:(\d+)/metrics")


# The long-running workers next to the sink: they serve no HTTP and rely on restarts.
WORKERS = ("processors", "notifier")


# --- reading the manifests ----------------------------------------------------------------------
def yaml_files() -> list[Path]:
    return sorted([*COMPOSE_DIR.rglob("*.yml"), *K8S_DIR.rglob("*.yaml")])


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def k8s_objects() -> list[dict[str, Any]]:
    objects = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return objects


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def k8s_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    """(owner/container, container) of every container and init container."""
    for obj in k8s_objects():
        if obj["kind"] in ("Deployment", "Job"):
            pod = obj["spec"]["template"]["spec"]
            for container in pod.get("initContainers", []) + pod["containers"]:
                yield f"{obj['metadata']['name']}/{container['name']}", container


def k8s_pod(deployment: str) -> dict[str, Any]:
    pod: dict[str, Any] = k8s_object("Deployment", deployment)["spec"]["template"]["spec"]
    return pod


def k8s_env(container: dict[str, Any]) -> dict[str, str]:
    """What a container's RUNSTREAM_* environment holds: its ConfigMaps (envFrom), then its own
    values (those from Secrets left out)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= k8s_object("ConfigMap", source["configMapRef"]["name"])["data"]
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = str(variable["value"])
    return env


def k8s_mount(pod: dict[str, Any], container: dict[str, Any], path: Path) -> tuple[Any, Any]:
    """The volume mount (and its volume) that holds ``path`` in ``container``."""
    target = PurePosixPath(path)
    mounts = [
        m
        for m in container.get("volumeMounts", [])
        if PurePosixPath(m["mountPath"]) == target
        or PurePosixPath(m["mountPath"]) in target.parents
    ]
    assert mounts, f"{container['name']}: nothing mounted at {target}"
    mount = max(mounts, key=lambda m: len(PurePosixPath(m["mountPath"]).parts))
    (volume,) = [v for v in pod.get("volumes", []) if v["name"] == mount["name"]]
    return mount, volume


def compose_mount(service: str, path: Path) -> tuple[str, str, str]:
    """(kind, source, options) of what holds ``path`` in a compose service: a bind mount or
    volume ("volume", source, "ro" or ""), a tmpfs ("tmpfs", "", options) or a secret ("secret",
    name, "")."""
    target = PurePosixPath(path)
    found: list[tuple[PurePosixPath, tuple[str, str, str]]] = []
    spec = services()[service]
    for entry in spec.get("volumes", []):
        source, dest, *mode = entry.split(":")
        found.append((PurePosixPath(dest), ("volume", source, ",".join(mode))))
    for entry in spec.get("tmpfs", []):
        dest, _, options = entry.partition(":")
        found.append((PurePosixPath(dest), ("tmpfs", "", options)))
    for name in spec.get("secrets", []):
        found.append((PurePosixPath("/run/secrets") / name, ("secret", name, "")))
    holding = [(d, m) for d, m in found if d == target or d in target.parents]
    assert holding, f"compose {service}: nothing mounted at {target}"
    return max(holding, key=lambda dm: len(dm[0].parts))[1]


def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Webhook URLs are checked against what their host resolves to: not here."""

    def unresolved(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "no DNS in this test")

    monkeypatch.setattr(socket, "getaddrinfo", unresolved)


def dockerfile_instruction(name: str) -> list[str]:
    """The exec-form arguments of the Dockerfile's (last) ENTRYPOINT or CMD."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith(name + " ")]
    value: list[str] = json.loads(lines[-1][len(name) + 1 :])
    return value


def argv(command: list[str] | None, args: list[str] | None) -> list[str]:
    """What a container runs: a new entrypoint (compose) or command (Kubernetes) drops the image's
    CMD too, as Docker and Kubernetes do."""
    if command is not None:
        return command + (args or [])
    return dockerfile_instruction("ENTRYPOINT") + (
        args if args is not None else dockerfile_instruction("CMD")
    )


def runstream_commands() -> Iterator[tuple[str, list[str]]]:
    for name, service in services().items():
        if service["image"].split(":")[0] == "runstream":
            yield f"compose {name}", argv(service.get("entrypoint"), service.get("command"))
    for name, container in k8s_containers():
        if container["image"].split(":")[0] == "runstream":
            yield f"k8s {name}", argv(container.get("command"), container.get("args"))


def interpolate(value: str) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, from COMPOSE_VARS."""

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        return COMPOSE_VARS.get(name) or (rest if kind == ":-" else "")

    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value)


def compose_argv(service: str) -> list[str]:
    return argv(services()[service].get("entrypoint"), services()[service].get("command"))


def compose_env(service: str) -> dict[str, str]:
    environment = services()[service].get("environment", {})
    return {key: interpolate(str(value)) for key, value in environment.items()}


def settings_of(command: list[str], env: dict[str, str]) -> Settings:
    """The settings ``runstream`` runs ``command`` with, as its main() builds them."""
    assert command[0] == "runstream", command
    args = build_parser().parse_args(command[1:])
    return Settings.load(
        env=env, **{name: getattr(args, name) for name in SETTINGS_ARGS if hasattr(args, name)}
    )


def metrics_ports_in(value: Any) -> set[int]:
    return {int(port) for port in METRICS_URL.findall(json.dumps(value))}


# --- the manifests ------------------------------------------------------------------------------
def test_every_manifest_parses_and_kustomize_lists_each() -> None:
    assert yaml_files(), "no manifests found"
    for path in yaml_files():
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert docs and all(isinstance(doc, dict) for doc in docs), path
    for obj in k8s_objects():
        assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"], obj
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    for path in COMPOSE_DIR.rglob("*.xml"):
        ET.parse(path)  # raises on XML ClickHouse would refuse too


def test_every_image_is_pinned() -> None:
    images = {f"compose {name}": s["image"] for name, s in services().items()}
    images |= {f"k8s {name}": c["image"] for name, c in k8s_containers()}
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("FROM "):
            images[f"Dockerfile {line}"] = line.split()[1]
    for where, image in images.items():
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"{where}: {image} has no tag"
        assert tag != "latest", f"{where}: {image}"
        if name == "runstream":  # built from this checkout: tagged with its version
            assert tag == __version__, f"{where}: {image}, runstream is {__version__}"
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    (runstream,) = [i for i in kustomization["images"] if i["name"] == "runstream"]
    assert runstream["newTag"] == __version__


def test_runstream_variables_are_settings_with_valid_values() -> None:
    for path in [*COMPOSE_DIR.rglob("*"), *K8S_DIR.rglob("*")]:
        if path.is_file():
            for name in re.findall(r"\bRUNSTREAM_[A-Z0-9_]+", path.read_text()):
                field = name.removeprefix(ENV_PREFIX).lower()
                assert field in Settings.model_fields, f"{path.name}: {name} is no setting"

    brokers = [name for name in services() if name.startswith("kafka-")]
    for name in services():
        env = compose_env(name)
        if not any(key.startswith(ENV_PREFIX) for key in env):
            continue
        settings = Settings.load(env=env)  # raises, naming the variable, on a bad value
        assert settings.topic_replication <= len(brokers)
        for server in settings.kafka_bootstrap.split(","):
            assert server.split(":")[0] in brokers, f"{name}: {server}"
        host = settings.clickhouse_host_port[0]
        aliases = {
            alias
            for service in services().values()
            for alias in (service.get("networks") or {}).get("default", {}).get("aliases", [])
        }
        assert host in aliases | set(services()), f"{name}: {host}"

    config = k8s_object("ConfigMap", "runstream")["data"]
    assert all(key.startswith(ENV_PREFIX) for key in config)
    Settings.load(env={**config, "RUNSTREAM_CLICKHOUSE_URL": "http://u:p@clickhouse:8123"})
    for name, container in k8s_containers():
        for variable in container.get("env", []):
            assert variable["name"].startswith(ENV_PREFIX), f"{name}: {variable['name']}"
        Settings.load(env=k8s_env(container))  # raises, naming the variable, on a bad value


def test_every_runstream_command_parses() -> None:
    commands = dict(runstream_commands())
    # topics, migrate, sink, processors, notifier; in k8s the waits for the schema and the topics
    assert len(commands) == 5 + 8, commands
    for where, command in commands.items():
        program, *args = command
        assert program == "runstream", f"{where}: runs {program}"
        try:
            build_parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"{where}: runstream refuses {args}")
    topics = ["runstream", "topics"]
    assert commands["compose topics"] == commands["k8s runstream-topics/topics"] == topics
    assert commands["compose sink"] == commands["k8s runstream-sink/sink"] == ["runstream", "sink"]
    for worker in WORKERS:
        command = ["runstream", worker]
        assert commands[f"compose {worker}"] == commands[f"k8s runstream-{worker}/{worker}"]
        assert commands[f"compose {worker}"] == command
        assert init_args(f"runstream-{worker}/wait-for-topics").command == "topics"
    assert init_args("runstream-sink/wait-for-schema").command == "migrate"


def init_args(name: str) -> Any:
    """The parsed arguments of an init container, which must wait, and long enough: a Job's
    pod may wait for a node, its image, and Kafka or ClickHouse to come up."""
    command = dict(runstream_commands())[f"k8s {name}"]
    args = build_parser().parse_args(command[1:])
    assert args.wait is True, f"{name}: {command} does not wait"
    assert args.timeout >= 600 and 0 < args.interval <= 30, f"{name}: {command}"
    return args


def test_the_image_has_what_every_command_needs() -> None:
    text = DOCKERFILE.read_text()
    # The package with the extras its commands import: the processors need faust.
    (extras,) = re.findall(r"pip install .*runstream-\*\.whl\)\[([a-z,]+)\]", text)
    optional = toml_module().loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    assert {"sinks", "processors"} <= set(extras.split(",")) <= set(optional), extras
    assert any(dep.startswith("faust-streaming") for dep in optional["processors"])
    # Every container runs the runstream CLI, the init containers' waits included: no scripts.
    assert dockerfile_instruction("ENTRYPOINT") == ["runstream"]
    copies = [line for line in text.splitlines() if line.startswith("COPY ")]
    assert not [line for line in copies if "/usr/local/bin" in line], copies
    assert not list(COMPOSE_DIR.glob("*.py")), "a script the image does not run"


def test_the_cluster_of_the_clickhouse_config_is_the_one_migrated() -> None:
    config = ET.parse(CLUSTER_XML).getroot()
    remote_servers = config.find("remote_servers")
    assert remote_servers is not None
    (cluster,) = list(remote_servers)
    # The migrate service and every sink (whose start-up migrations take the same form).
    for name, command in runstream_commands():
        if name.startswith("compose "):
            env = compose_env(name.removeprefix("compose "))
            assert settings_of(command, env).clickhouse_cluster == cluster.tag, name
    migrate = compose_argv("migrate")
    assert build_parser().parse_args(migrate[1:]).clickhouse_cluster == cluster.tag

    config_map = k8s_object("ConfigMap", "runstream")["data"]
    (k8s_migrate,) = [c for n, c in k8s_containers() if n.startswith("runstream-migrate/")]
    migrate = k8s_migrate["command"] + k8s_migrate["args"]
    k8s_cluster = build_parser().parse_args(migrate[1:]).clickhouse_cluster
    assert k8s_cluster == config_map["RUNSTREAM_CLICKHOUSE_CLUSTER"]
    assert settings_of(migrate, config_map).clickhouse_cluster == k8s_cluster

    # The rest of the config names services of the compose file, and gives the macros that the
    # Replicated tables' Keeper paths use.
    hosts = {r.findtext("host") for r in cluster.iter("replica")}
    nodes = [name for name in services() if name.startswith("clickhouse-")]
    assert hosts == set(nodes)
    assert {compose_env(n)["CLICKHOUSE_REPLICA"] for n in nodes} == set(nodes)
    for node in nodes:
        assert services()[node]["hostname"] == node  # how the others reach it
    macros = config.find("macros")
    assert macros is not None
    assert {m.tag for m in macros} >= {"shard", "replica"}
    assert "{shard}" in migrations.REPLICA_PATH and "{replica}" in migrations.REPLICA_PATH

    keepers = [name for name in services() if name.startswith("keeper-")]
    assert {n.findtext("host") for n in config.iter("node")} == set(keepers)
    raft = ET.parse(KEEPER_XML).getroot().iter("server")
    ids = {s.findtext("hostname"): s.findtext("id") for s in raft}
    assert ids == {k: compose_env(k)["KEEPER_SERVER_ID"] for k in keepers}


def test_the_metrics_port_is_the_one_probed_and_scraped() -> None:
    sink = services()["sink"]
    port = int(compose_env("sink")["RUNSTREAM_SINK_METRICS_PORT"])
    assert metrics_ports_in(sink["healthcheck"]) == {port}
    assert [int(p) for p in sink["expose"]] == [port]
    assert f"EXPOSE {port}" in DOCKERFILE.read_text()

    config = k8s_object("ConfigMap", "runstream")["data"]
    assert int(config["RUNSTREAM_SINK_METRICS_PORT"]) == port
    deployment = k8s_object("Deployment", "runstream-sink")
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    (container_port,) = container["ports"]
    assert container_port == {"name": "metrics", "containerPort": port}
    assert config["RUNSTREAM_SINK_METRICS_HOST"] == "0.0.0.0"  # probes come from the kubelet
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    service = k8s_object("Service", "runstream-sink-metrics")
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == port and service_port["targetPort"] == "metrics"
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()


def test_sinks_start_after_the_cluster_migration_and_never_beside_old_ones() -> None:
    sink = services()["sink"]
    assert sink["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert sink["depends_on"]["topics"] == {"condition": "service_completed_successfully"}
    assert sink["deploy"]["replicas"] == 2

    deployment = k8s_object("Deployment", "runstream-sink")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init_args(f"runstream-sink/{init['name']}").command == "migrate"
    # Enough for the batch in hand and the one being written, with a retry or two.
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert sink["stop_grace_period"] == f"{pod['terminationGracePeriodSeconds']}s"


def test_processors_read_rules_and_write_home_where_mounted() -> None:
    """RUNSTREAM_ALERT_RULES in a mounted directory (so that replacing the file is seen), an
    example rules file there that the processors accept, RUNSTREAM_HOME on a writable mount."""
    settings = settings_of(compose_argv("processors"), compose_env("processors"))
    kind, _, _ = compose_mount("processors", settings.home / "processors")
    assert kind == "tmpfs"
    kind, source, mode = compose_mount("processors", settings.alert_rules_path)
    assert (kind, mode) == ("volume", "ro")
    # The directory, not the file: a bind mount of a file keeps showing the old one once an edit
    # replaces it (runstream alerts add, most editors).
    assert compose_mount("processors", settings.alert_rules_path.parent) == (kind, source, mode)
    assert (COMPOSE_DIR / source).is_dir()
    assert load_rules(COMPOSE_DIR / source / settings.alert_rules_path.name), "no example rules"

    pod = k8s_pod("runstream-processors")
    (container,) = pod["containers"]
    settings = settings_of(container["command"] + container["args"], k8s_env(container))
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mount, volume = k8s_mount(pod, container, settings.home / "processors")
    assert "emptyDir" in volume and not mount.get("readOnly"), mount
    mount, volume = k8s_mount(pod, container, settings.alert_rules_path)
    # A subPath mount (or one of the file itself) never sees the ConfigMap's updates.
    assert PurePosixPath(mount["mountPath"]) == PurePosixPath(settings.alert_rules_path.parent)
    assert mount["readOnly"] is True and "subPath" not in mount
    rules = k8s_object("ConfigMap", volume["configMap"]["name"])["data"]
    assert set(rules) == {settings.alert_rules_path.name}
    assert loads_rules(rules[settings.alert_rules_path.name]), "no example rules"


def test_the_webhooks_come_from_a_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The notifier's webhooks hold HMAC secrets: a compose secret kept out of git and out of the
    image, a Kubernetes Secret; the examples are placeholders the notifier accepts."""
    no_dns(monkeypatch)
    settings = settings_of(compose_argv("notifier"), compose_env("notifier"))
    kind, name, _ = compose_mount("notifier", settings.webhooks_path)
    assert kind == "secret"
    assert settings.webhooks_path == Path("/run/secrets") / name
    secret_file = compose()["secrets"][name]["file"]
    assert secret_file == "./webhooks.toml"
    assert "/webhooks.toml" in (COMPOSE_DIR / ".gitignore").read_text().splitlines()
    assert "deploy/compose/webhooks.toml" in DOCKERIGNORE.read_text().splitlines()
    example = COMPOSE_DIR / "webhooks.example.toml"
    routes = load_routes(example)
    assert routes and all("REPLACE-ME" in r.webhook.url.upper() for r in routes)
    assert all(r.webhook.secret == "REPLACE-ME" for r in routes)

    pod = k8s_pod("runstream-notifier")
    (container,) = pod["containers"]
    settings = settings_of(container["command"] + container["args"], k8s_env(container))
    mount, volume = k8s_mount(pod, container, settings.webhooks_path)
    assert PurePosixPath(mount["mountPath"]) == PurePosixPath(settings.webhooks_path.parent)
    assert mount["readOnly"] is True and "subPath" not in mount
    assert set(volume) == {"name", "secret"}, volume  # a Secret, not optional
    secret = k8s_object("Secret", volume["secret"]["secretName"])
    assert set(secret["stringData"]) == {settings.webhooks_path.name}
    text = secret["stringData"][settings.webhooks_path.name]
    (tmp_path / "webhooks.toml").write_text(text)
    routes = load_routes(tmp_path / "webhooks.toml")
    assert routes and all("REPLACE-ME" in r.webhook.url.upper() for r in routes)
    assert all(r.webhook.secret == "REPLACE-ME" for r in routes)
    assert "PLACEHOLDER" in (K8S_DIR / "secret-webhooks.yaml").read_text()
    for obj in k8s_objects():
        if obj["kind"] == "ConfigMap":
            assert "[[webhook]]" not in json.dumps(obj), obj["metadata"]["name"]


def test_the_workers_wait_for_the_topics_and_rely_on_restarts() -> None:
    """No HTTP to probe: a worker that fails exits and is restarted. Both wait for the topics
    (the ticks, alerts and dead-letter topics have configurations only the topics job gives)."""
    partitions = int(compose_env("sink")["RUNSTREAM_TOPIC_PARTITIONS"])
    for worker in WORKERS:
        service = services()[worker]
        assert service["depends_on"]["topics"] == {"condition": "service_completed_successfully"}
        assert service["restart"] == "unless-stopped"
        assert not {"healthcheck", "ports", "expose"} & set(service), worker
        assert service["image"] == services()["sink"]["image"]
        assert service["deploy"]["resources"]["limits"].keys() == {"cpus", "memory"}
        assert 1 <= service["deploy"]["replicas"] <= partitions
        assert int(service["stop_grace_period"].removesuffix("s")) >= 30

        deployment = k8s_object("Deployment", f"runstream-{worker}")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert labels["app.kubernetes.io/part-of"] == "runstream"
        assert 1 <= deployment["spec"]["replicas"] <= partitions
        pod = deployment["spec"]["template"]["spec"]
        assert pod.get("restartPolicy", "Always") == "Always"
        assert pod["terminationGracePeriodSeconds"] >= 30
        assert pod["securityContext"] == k8s_pod("runstream-sink")["securityContext"]
        (init,) = pod["initContainers"]
        (container,) = pod["containers"]
        assert init_args(f"runstream-{worker}/{init['name']}").command == "topics"
        assert init["envFrom"] == container["envFrom"] == [{"configMapRef": {"name": "runstream"}}]
        assert (
            init["image"]
            == container["image"]
            == k8s_pod("runstream-sink")["containers"][0]["image"]
        )
        assert not {"ports", "startupProbe", "livenessProbe", "readinessProbe"} & set(container)
        # No ClickHouse for them: the Secret with its password stays out of their pods.
        assert not any("valueFrom" in v for v in container.get("env", []))
    assert services()["processors"]["deploy"]["replicas"] >= 2
    assert k8s_object("Deployment", "runstream-processors")["spec"]["replicas"] >= 2


def test_every_container_is_sized_and_locked_down() -> None:
    for name, container in k8s_containers():
        for bound in ("requests", "limits"):
            assert container["resources"][bound].keys() == {"cpu", "memory"}, f"{name}: {bound}"
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name


def test_each_disruption_budget_keeps_one_pod_of_a_deployment() -> None:
    budgets = {
        o["metadata"]["name"]: o for o in k8s_objects() if o["kind"] == "PodDisruptionBudget"
    }
    assert set(budgets) >= {"runstream-sink", "runstream-processors"}
    for name, budget in budgets.items():
        deployment = k8s_object("Deployment", name)
        selector = budget["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        assert selector == deployment["spec"]["selector"]["matchLabels"], name
        assert 1 <= budget["spec"]["minAvailable"] < deployment["spec"]["replicas"], name


# --- what the commands do --------------------------------------------------------------------
class Recorder:
    """A ClickHouse client that records statements and knows a set of applied migrations."""

    def __init__(self, applied: set[int] | None = None) -> None:
        self.commands: list[str] = []
        self.applied = applied

    def command(self, sql: str) -> None:
        self.commands.append(sql)

    def query(self, sql: str) -> Any:
        if self.applied is None:
            raise RuntimeError("Code: 81. DB::Exception: Database runstream does not exist")
        return type("Result", (), {"result_rows": [(v,) for v in sorted(self.applied)]})()

    def insert(self, *args: Any, **kwargs: Any) -> None:
        pass


def test_the_migrate_service_creates_the_cluster_schema() -> None:
    """What `runstream migrate` does with the compose service's command and environment, on a
    client that records the statements instead of a server."""
    client = Recorder(applied=set())
    settings = settings_of(compose_argv("migrate"), compose_env("migrate"))
    migrations.migrate(settings, client)
    ddl = [c for c in client.commands if not c.startswith("INSERT")]
    assert len(ddl) > len(migrations.available())
    assert all(f"ON CLUSTER `{settings.clickhouse_cluster}`" in c for c in ddl)
    assert any("ReplicatedMergeTree(" in c for c in ddl)


class Admin:
    """A Kafka AdminClient that lists a set of topics (None: no broker answers)."""

    def __init__(self, topics: dict[str, Any] | None) -> None:
        self.topics = topics

    def list_topics(self, timeout: float) -> Any:
        if self.topics is None:
            raise RuntimeError('KafkaError{code=_TRANSPORT,val=-195,str="Failed to get metadata"}')
        return SimpleNamespace(topics=self.topics)


def run_init_container(
    name: str, secrets: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, Settings]:
    """Run a k8s init container's command as its pod would: `runstream` with its arguments and
    the environment of its ConfigMaps, plus ``secrets`` for what its Secrets hold."""
    container = dict(k8s_containers())[name]
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    env = k8s_env(container) | secrets
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    command = container["command"] + container["args"]
    assert command[0] == "runstream"
    return cli.main([*command[1:], "--interval", "0"]), settings_of(command, env)


def test_the_sinks_wait_for_the_schema_the_migrate_job_creates(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (job,) = [c for n, c in k8s_containers() if n.startswith("runstream-migrate/")]
    job_settings = settings_of(job["command"] + job["args"], k8s_env(job))
    every = {m.version for m in migrations.available()}
    clients = [Recorder(applied=None), Recorder(applied=every - {max(every)}), Recorder(every)]
    answers = list(clients)
    connected: list[tuple[Settings, Any]] = []

    def connect(settings: Settings, **kwargs: Any) -> Recorder:
        connected.append((settings, kwargs))
        return answers.pop(0)

    monkeypatch.setattr(clickhouse, "connect", connect)
    url = {"RUNSTREAM_CLICKHOUSE_URL": "http://runstream:hunter2@clickhouse:8123"}
    code, settings = run_init_container("runstream-sink/wait-for-schema", url, monkeypatch)
    assert code == 0 and not answers
    said = capsys.readouterr()
    assert said.out.count("waiting for runstream migrate") == 2
    assert said.out.endswith("schema is up to date\n")
    assert "hunter2" not in said.out + said.err
    # The database the Job migrates, on the server the sinks write to; nothing applied.
    assert settings.clickhouse_database == job_settings.clickhouse_database
    for used, kwargs in connected:
        assert used.clickhouse_url == url["RUNSTREAM_CLICKHOUSE_URL"]
        assert used.clickhouse_database == job_settings.clickhouse_database
        assert kwargs == {"database": "default"}
    assert not [sql for client in clients for sql in client.commands]


@pytest.mark.parametrize("worker", WORKERS)
def test_the_workers_wait_for_the_topics_the_topics_job_creates(
    worker: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from confluent_kafka import admin

    (job,) = [c for n, c in k8s_containers() if n.startswith("runstream-topics/")]
    job_settings = settings_of(job["command"] + job["args"], k8s_env(job))
    wanted = Topics(job_settings.topic_prefix).specs()
    every = {spec.name: SimpleNamespace(error=None) for spec in wanted}
    missing = {name: t for name, t in every.items() if name != wanted[-1].name}
    answers = [Admin(None), Admin(missing), Admin(every)]
    configs: list[dict[str, Any]] = []
    monkeypatch.setattr(
        admin, "AdminClient", lambda config: configs.append(config) or answers.pop(0)
    )
    code, settings = run_init_container(f"runstream-{worker}/wait-for-topics", {}, monkeypatch)
    assert code == 0 and not answers
    said = capsys.readouterr().out
    assert f"topics {wanted[-1].name} not there yet" in said
    assert said.endswith("every topic exists\n")
    assert settings.topic_prefix == job_settings.topic_prefix
    assert {c["bootstrap.servers"] for c in configs} == {job_settings.kafka_bootstrap}
