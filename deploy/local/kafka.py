"""Apache Kafka 4.0.x in KRaft mode, one combined broker+controller node, from Maven Central jars.

The jars are shared by every home (``<cache_dir>/kafka-<version>/libs``); configuration, data and
logs belong to one home (``<home>/kafka``, ``<home>/logs``).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

from runstream.deploy.local.ports import port_open
from runstream.deploy.local.processes import exclusive
from runstream.errors import StackError
from runstream.settings import Settings

POM_TEMPLATE = Path(__file__).parent / "kafka-pom.xml"
MIN_JAVA = 17
_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')
_JDK_HINT = "Install a JDK 17+, e.g. apt-get install openjdk-17-jre-headless"


class KafkaLayout:
    """Where the broker's jars, configuration, data and logs live, and how to run it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host, self.port = settings.kafka_host_port
        self.controller_port = settings.kafka_controller_port
        self.jars = settings.cache_dir / f"kafka-{settings.kafka_version}"
        self.libs = self.jars / "libs"
        self.stamp = self.jars / "complete"
        self.root = settings.home / "kafka"
        self.data = self.root / "data"
        self.properties = self.root / "server.properties"
        self.log4j = self.root / "log4j2.properties"
        self.log = settings.home / "logs" / "kafka.log"
        self.stdout = settings.home / "logs" / "kafka.stdout.log"

    @property
    def jars_cached(self) -> bool:
        return self.stamp.exists()

    # --- preconditions ------------------------------------------------------------------------
    def java(self) -> str:
        """The java executable (JAVA_HOME first, then PATH), checked to be 17 or newer."""
        java_home = os.environ.get("JAVA_HOME")
        candidate = Path(java_home) / "bin" / "java" if java_home else None
        java = str(candidate) if candidate and candidate.is_file() else shutil.which("java")
        if java is None:
            raise StackError(
                "Kafka needs Java and 'java' is not on PATH (nor in JAVA_HOME). "
                f"{_JDK_HINT}, then run 'runstream dev up' again."
            )
        version = _java_major(java)
        if version is not None and version < MIN_JAVA:
            raise StackError(
                f"Kafka {self.settings.kafka_version} needs Java {MIN_JAVA} or newer; {java} is "
                f"Java {version}. {_JDK_HINT}, and put it first on PATH or in JAVA_HOME."
            )
        return java

    def require_maven(self) -> str:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError(
                "Maven is needed once, to download the Kafka jars into "
                f"{self.jars}, and 'mvn' is not on PATH. Install it (e.g. apt-get install maven) "
                "and run 'runstream dev up' again."
            )
        return mvn

    # --- jars ---------------------------------------------------------------------------------
    def fetch_jars(self) -> bool:
        """Download the broker jars with Maven the first time; True when it downloaded now."""
        if self.jars_cached:
            return False
        mvn = self.require_maven()
        self.jars.mkdir(parents=True, exist_ok=True)
        lock = self.jars.parent / f"kafka-{self.settings.kafka_version}.lock"
        with exclusive(lock, timeout=600, holder=f"the Kafka jar cache {self.jars}"):
            if self.jars_cached:  # another process fetched them while this one waited
                return False
            pom = self.jars / "pom.xml"
            pom.write_text(
                POM_TEMPLATE.read_text(encoding="utf-8").replace(
                    "@KAFKA_VERSION@", self.settings.kafka_version
                ),
                encoding="utf-8",
            )
            if self.libs.exists():
                shutil.rmtree(self.libs)  # a fetch that died half way: start clean
            argv = [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies"]
            argv.append(f"-DoutputDirectory={self.libs}")
            result = subprocess.run(argv, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise StackError(
                    f"Maven could not download Kafka {self.settings.kafka_version} "
                    f"(exit {result.returncode}). It needs Maven Central, or the mirror/proxy "
                    "configured in ~/.m2/settings.xml; fix that and run 'runstream dev up' "
                    f"again. Maven said:\n{(result.stdout + result.stderr)[-2000:]}"
                )
            # Only now: an interrupted fetch leaves no stamp and is redone next time.
            self.stamp.write_text(f"{self.settings.kafka_version}\n", encoding="utf-8")
        return True

    # --- configuration ------------------------------------------------------------------------
    def write_config(self) -> None:
        host, port, cport = self.host, self.port, self.controller_port
        self.root.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
            "advertised.listeners": f"PLAINTEXT://{host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.bootstrap.servers": f"{host}:{cport}",
            "log.dirs": str(self.data),
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # A restarted broker cannot register until its previous session expires, even after
            # a clean shutdown (DUPLICATE_BROKER_REGISTRATION); a short session makes `down`
            # then `up` take seconds instead of ten.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "2500",
            # Topics are created by runstream with their intended settings, never by accident.
            "auto.create.topics.enable": "false",
            "num.partitions": str(self.settings.topic_partitions),
        }
        self.properties.write_text(
            "".join(f"{k}={v}\n" for k, v in properties.items()), encoding="utf-8"
        )
        # A rolling file: a dev stack can run for weeks, its log must not fill the disk.
        self.log4j.write_text(
            "status = error\n"
            "appender.file.type = RollingFile\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {self.log}\n"
            f"appender.file.filePattern = {self.log}.%i\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "appender.file.policies.type = Policies\n"
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy\n"
            "appender.file.policies.size.size = 20MB\n"
            "appender.file.strategy.type = DefaultRolloverStrategy\n"
            "appender.file.strategy.max = 3\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
            # The org.apache.kafka classes log every configuration value at start and every
            # topic/partition change; their warnings and errors are what a dev stack needs.
            "logger.kafka.name = org.apache.kafka\n"
            "logger.kafka.level = WARN\n",
            encoding="utf-8",
        )

    def _java_argv(self, java: str, main: str, *args: str, heap: bool = False) -> list[str]:
        memory = ["-Xms256m", f"-Xmx{self.settings.kafka_heap}"] if heap else []
        return [
            java,
            *memory,
            "-cp",
            f"{self.libs}/*",
            f"-Dlog4j2.configurationFile=file:{self.log4j}",
            main,
            *args,
        ]

    def format_storage(self, java: str) -> None:
        """Format the KRaft log directory once; a formatted directory keeps its data."""
        if (self.data / "meta.properties").exists():
            return
        cluster_id = self.root / "cluster.id"
        if not cluster_id.exists():
            cluster_id.write_text(new_cluster_id() + "\n", encoding="utf-8")
        _run(
            self._java_argv(
                java,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster_id.read_text(encoding="utf-8").strip(),
                "-c",
                str(self.properties),
            ),
            "StorageTool format",
            f"If {self.data} holds data of another Kafka, move it away or remove it "
            "(Kafka then starts empty).",
        )

    def prepare(self) -> list[str]:
        """Everything before the broker can start; returns the broker's command line."""
        java = self.java()
        self.fetch_jars()
        self.write_config()
        self.format_storage(java)
        return self._java_argv(java, "kafka.Kafka", str(self.properties), heap=True)

    # --- health -------------------------------------------------------------------------------
    def healthy(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap, "log_level": 0})
        try:
            # Listening is not enough: right after a restart the broker can take seconds to
            # register with its controller, and until then it serves no metadata.
            return len(admin.list_topics(timeout=2).brokers) > 0
        except Exception:
            return False


def new_cluster_id() -> str:
    """What ``kafka-storage random-uuid`` prints, without starting a JVM for it (half a second).

    Kafka's Uuid: 16 random bytes, URL-safe base64 without padding, never starting with '-'.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


def _java_major(java: str) -> int | None:
    try:
        result = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _JAVA_VERSION.search(result.stderr + result.stdout)
    if match is None:
        return None  # an unusual build: let the broker itself say what it misses
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def _run(argv: list[str], what: str, hint: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(
            f"Kafka's {what} failed (exit {result.returncode}). {hint} "
            f"Its output:\n{(result.stdout + result.stderr)[-2000:]}"
        )
    return result.stdout
