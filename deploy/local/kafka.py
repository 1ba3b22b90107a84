"""Apache Kafka 4.0.x in KRaft mode, single combined node, from Maven Central jars."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from runstream.errors import StackError
from runstream.settings import Settings

POM_TEMPLATE = Path(__file__).parent / "kafka-pom.xml"


class KafkaLayout:
    """Where the broker's jars, configuration, data and log live."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.jars = settings.cache_dir / f"kafka-{settings.kafka_version}"
        self.libs = self.jars / "libs"
        self.stamp = self.jars / "complete"
        self.root = settings.home / "kafka"
        self.data = self.root / "data"
        self.properties = self.root / "server.properties"
        self.log4j = self.root / "log4j2.properties"
        self.log = settings.home / "logs" / "kafka.log"
        self.stdout = settings.home / "logs" / "kafka.stdout.log"

    # --- jars ---------------------------------------------------------------------------------
    def fetch_jars(self) -> bool:
        """Download the broker jars with Maven the first time; True when it downloaded."""
        if self.stamp.exists():
            return False
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError(
                "Maven is needed once, to download the Kafka jars, and 'mvn' is not on PATH. "
                "Install it (e.g. apt-get install maven) and run 'runstream dev up' again."
            )
        self.jars.mkdir(parents=True, exist_ok=True)
        pom = self.jars / "pom.xml"
        pom.write_text(
            POM_TEMPLATE.read_text().replace("@KAFKA_VERSION@", self.settings.kafka_version)
        )
        if self.libs.exists():
            shutil.rmtree(self.libs)  # a fetch that died half way: start clean
        result = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={self.libs}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(
                f"Maven could not download Kafka {self.settings.kafka_version} "
                f"(exit {result.returncode}):\n{(result.stdout + result.stderr)[-2000:]}"
            )
        self.stamp.write_text("ok\n")  # only now: an interrupted fetch is retried next time
        return True

    # --- configuration ------------------------------------------------------------------------
    def write_config(self) -> None:
        host, port = self.settings.kafka_host_port
        cport = self.settings.kafka_controller_port
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
        self.properties.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
        self.log4j.write_text(
            "status = error\n"
            "appender.file.type = File\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {self.log}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
            "logger.kafka.name = org.apache.kafka\n"
            "logger.kafka.level = WARN\n"
        )

    def java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise StackError(
                "Kafka needs Java 17 or newer and 'java' is not on PATH. Install a JDK, "
                "e.g. apt-get install openjdk-17-jre-headless, then run 'runstream dev up' again."
            )
        return java

    def _java_argv(self, main: str, *args: str, heap: bool = False) -> list[str]:
        memory = ["-Xms256m", f"-Xmx{self.settings.kafka_heap}"] if heap else []
        return [
            self.java(),
            *memory,
            "-cp",
            f"{self.libs}/*",
            f"-Dlog4j2.configurationFile=file:{self.log4j}",
            main,
            *args,
        ]

    def format_storage(self) -> None:
        """Format the KRaft log directory once; a formatted directory keeps its data."""
        if (self.data / "meta.properties").exists():
            return
        cluster_id = self.root / "cluster.id"
        if not cluster_id.exists():
            result = self._run(self._java_argv("kafka.tools.StorageTool", "random-uuid"))
            cluster_id.write_text(result.strip().splitlines()[-1] + "\n")
        self._run(
            self._java_argv(
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster_id.read_text().strip(),
                "-c",
                str(self.properties),
            )
        )

    def broker_argv(self) -> list[str]:
        return self._java_argv("kafka.Kafka", str(self.properties), heap=True)

    @staticmethod
    def _run(argv: list[str]) -> str:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StackError(
                f"{' '.join(argv[-3:])} failed (exit {result.returncode}):\n"
                f"{(result.stdout + result.stderr)[-2000:]}"
            )
        return result.stdout
