"""``runstream dev``: the whole pipeline on one machine, as local background processes.

Kafka (KRaft, from Maven jars), ClickHouse (chdb-core) on loopback, the topics, the tables and the
pipeline's workers. Everything lives under ``settings.home``: data survives ``down`` then ``up``.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from runstream.deploy.local import clickhouse_server
from runstream.deploy.local.admin import ensure_topics
from runstream.deploy.local.kafka import KafkaLayout
from runstream.deploy.local.processes import PidFile, port_open, spawn, tail, terminate, wait_gone
from runstream.errors import StackError
from runstream.settings import Settings


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    address: str
    healthy: bool
    log: Path
    detail: str = ""

    @property
    def state(self) -> str:
        if self.pid is None:
            return "stopped"
        return "healthy" if self.healthy else "unhealthy"


@dataclass(frozen=True)
class WorkerSpec:
    """A pipeline worker that ``dev up`` starts after the services: ``python -m runstream ...``."""

    name: str
    args: tuple[str, ...]


DEFAULT_WORKERS = (WorkerSpec("sink", ("sink",)),)


class LocalStack:
    def __init__(self, settings: Settings, workers: Sequence[WorkerSpec] = DEFAULT_WORKERS) -> None:
        self.settings = settings
        self.workers = tuple(workers)
        self.home = settings.home
        self.run_dir = self.home / "run"
        self.logs = self.home / "logs"
        self.kafka = KafkaLayout(settings)
        self.clickhouse_data = self.home / "clickhouse" / "data"
        self.clickhouse_run = self.home / "clickhouse" / "run"
        self.clickhouse_log = self.logs / "clickhouse.log"

    # --- pid files ------------------------------------------------------------------------------
    def _pidfile(self, name: str) -> PidFile:
        return PidFile(self.run_dir / f"{name}.pid")

    def _worker_log(self, worker: WorkerSpec) -> Path:
        return self.logs / f"{worker.name}.log"

    # --- up -----------------------------------------------------------------------------------
    def up(self, timeout: float = 180.0) -> list[ServiceStatus]:
        """Start whatever is not running yet and wait until all of it is healthy. Idempotent."""
        deadline = time.monotonic() + timeout
        self._check_loopback()
        with ThreadPoolExecutor(2) as pool:
            kafka = pool.submit(self._start_kafka, deadline)
            clickhouse = pool.submit(self._start_clickhouse, deadline)
            kafka.result()
            clickhouse.result()
        ensure_topics(self.settings)
        from runstream.sinks.migrations import migrate

        migrate(self.settings)
        for worker in self.workers:
            self._start_worker(worker)
        return self.status()

    def _check_loopback(self) -> None:
        host, _ = self.settings.clickhouse_host_port
        if not _is_loopback(host):
            raise StackError(
                f"the local ClickHouse must listen on loopback, not {host!r}: its user 'default' "
                "has no password and can read any file. Use 127.0.0.1 in RUNSTREAM_CLICKHOUSE_URL."
            )
        kafka_host, _ = self.settings.kafka_host_port
        if not _is_loopback(kafka_host):
            raise StackError(
                f"the local Kafka must listen on loopback, not {kafka_host!r} "
                "(it has no authentication). Use 127.0.0.1 in RUNSTREAM_KAFKA_BOOTSTRAP."
            )

    def _start_kafka(self, deadline: float) -> None:
        pidfile = self._pidfile("kafka")
        host, port = self.settings.kafka_host_port
        pid = pidfile.read()
        if pid is None:
            _require_free(host, port, "Kafka", "RUNSTREAM_KAFKA_BOOTSTRAP")
            _require_free(
                host,
                self.settings.kafka_controller_port,
                "the Kafka controller",
                "RUNSTREAM_KAFKA_CONTROLLER_PORT",
            )
            self.kafka.java()
            self.kafka.fetch_jars()
            self.kafka.write_config()
            self.kafka.format_storage()
            pid = spawn(self.kafka.broker_argv(), log=self.kafka.stdout, cwd=self.kafka.root)
            pidfile.write(pid)
        self._wait(
            pid=pid,
            name="Kafka",
            healthy=self._kafka_healthy,
            log=self.kafka.log,
            deadline=deadline,
            extra=self.kafka.stdout,
        )

    def _start_clickhouse(self, deadline: float) -> None:
        pidfile = self._pidfile("clickhouse")
        host, port = self.settings.clickhouse_host_port
        pid = pidfile.read()
        if pid is None:
            _require_free(host, port, "ClickHouse", "RUNSTREAM_CLICKHOUSE_URL")
            from runstream._extras import require

            require("chdb", part="runstream dev (ClickHouse)", extra="local")
            argv = [
                sys.executable,
                "-m",
                "runstream.deploy.local.clickhouse_server",
                "--data-dir",
                str(self.clickhouse_data),
                "--run-dir",
                str(self.clickhouse_run),
                "--host",
                host,
                "--http-port",
                str(port),
            ]
            pid = spawn(argv, log=self.clickhouse_log, cwd=self.home)
            pidfile.write(pid)
        self._wait(
            pid=pid,
            name="ClickHouse",
            healthy=self._clickhouse_healthy,
            log=self.clickhouse_log,
            deadline=deadline,
        )

    def _start_worker(self, worker: WorkerSpec) -> None:
        pidfile = self._pidfile(f"worker-{worker.name}")
        if pidfile.read() is not None:
            return
        env = dict(os.environ)
        env.update(self.worker_env())
        argv = [sys.executable, "-m", "runstream", *worker.args]
        pidfile.write(spawn(argv, log=self._worker_log(worker), cwd=self.home, env=env))

    def worker_env(self) -> dict[str, str]:
        """The settings the workers must share with the stack, as RUNSTREAM_* variables."""
        s = self.settings
        return {
            "RUNSTREAM_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "RUNSTREAM_CLICKHOUSE_URL": s.clickhouse_url,
            "RUNSTREAM_CLICKHOUSE_DATABASE": s.clickhouse_database,
            "RUNSTREAM_TOPIC_PREFIX": s.topic_prefix,
            "RUNSTREAM_HOME": str(s.home),
        }

    def _wait(
        self,
        *,
        pid: int,
        name: str,
        healthy: Callable[[], bool],
        log: Path,
        deadline: float,
        extra: Path | None = None,
    ) -> None:
        while True:
            if healthy():
                return
            if wait_gone(pid, 0):
                self._pidfile(name.lower()).clear()
                raise StackError(self._died_message(name, log, extra))
            if time.monotonic() > deadline:
                raise StackError(
                    f"{name} (pid {pid}) did not become healthy in time; see its log {log}:\n"
                    f"{tail(log)}"
                )
            time.sleep(0.2)

    def _died_message(self, name: str, log: Path, extra: Path | None) -> str:
        text = "\n".join(t for t in (tail(log), tail(extra) if extra else "") if t)
        hint = ""
        lowered = text.lower()
        if "lock" in lowered and ("data" in lowered or "directory" in lowered):
            hint = (
                f" Its data directory under {self.home} is locked by another process: stop that "
                "process, or give this stack its own RUNSTREAM_HOME."
            )
        elif "address already in use" in lowered:
            hint = " One of its ports is taken by another process."
        return f"{name} exited during start-up.{hint} Log: {log}\n{text}"

    # --- health ---------------------------------------------------------------------------------
    def _kafka_healthy(self) -> bool:
        host, port = self.settings.kafka_host_port
        if not port_open(host, port):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap, "log_level": 0})
        try:
            # Listening is not enough: right after a restart the broker can take seconds to
            # register with its controller, and until then it serves no metadata.
            return len(admin.list_topics(timeout=2).brokers) > 0
        except Exception:
            return False

    def _clickhouse_healthy(self) -> bool:
        try:
            url = self.settings.clickhouse_url + "/ping"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    # --- down -----------------------------------------------------------------------------------
    def down(self, timeout: float = 30.0) -> None:
        """Stop the workers, then Kafka, then ClickHouse. Harmless when nothing runs."""
        worker_names = {w.name for w in self.workers} | self._running_worker_names()
        for name in sorted(worker_names):
            self._stop(f"worker-{name}", timeout)
        self._stop("kafka", timeout)
        pid = self._pidfile("clickhouse").read()
        if pid is not None and clickhouse_server.stop(self.clickhouse_run):
            wait_gone(pid, timeout)
        self._stop("clickhouse", timeout)

    def _running_worker_names(self) -> set[str]:
        if not self.run_dir.exists():
            return set()
        return {p.stem.removeprefix("worker-") for p in self.run_dir.glob("worker-*.pid")}

    def _stop(self, name: str, timeout: float) -> None:
        pidfile = self._pidfile(name)
        pid = pidfile.read()
        if pid is not None:
            terminate(pid, timeout)
        pidfile.clear()

    # --- one service at a time (failure tests and benchmarks) -----------------------------------
    def stop_service(self, name: str, *, kill: bool = False, timeout: float = 30.0) -> None:
        """Stop ``kafka`` or ``clickhouse`` alone; ``kill=True`` sends SIGKILL, as a crash would."""
        self._check_service(name)
        pidfile = self._pidfile(name)
        pid = pidfile.read()
        if pid is not None:
            if kill:
                os.kill(pid, signal.SIGKILL)
                wait_gone(pid, timeout)
            elif name == "clickhouse" and clickhouse_server.stop(self.clickhouse_run):
                wait_gone(pid, timeout)
            terminate(pid, timeout)
        pidfile.clear()

    def start_service(self, name: str, timeout: float = 120.0) -> None:
        """Start ``kafka`` or ``clickhouse`` alone (again) and wait until it is healthy."""
        self._check_service(name)
        deadline = time.monotonic() + timeout
        if name == "kafka":
            self._start_kafka(deadline)
        else:
            self._start_clickhouse(deadline)

    @staticmethod
    def _check_service(name: str) -> None:
        if name not in ("kafka", "clickhouse"):
            raise StackError(f"unknown service {name!r}: expected 'kafka' or 'clickhouse'")

    # --- status ---------------------------------------------------------------------------------
    def status(self) -> list[ServiceStatus]:
        statuses = []
        kafka_pid = self._pidfile("kafka").read()
        statuses.append(
            ServiceStatus(
                "kafka",
                kafka_pid,
                self.settings.kafka_bootstrap,
                kafka_pid is not None and self._kafka_healthy(),
                self.kafka.log,
            )
        )
        ch_pid = self._pidfile("clickhouse").read()
        statuses.append(
            ServiceStatus(
                "clickhouse",
                ch_pid,
                self.settings.clickhouse_url,
                ch_pid is not None and self._clickhouse_healthy(),
                self.clickhouse_log,
            )
        )
        names = [w.name for w in self.workers]
        names += sorted(self._running_worker_names() - set(names))
        for name in names:
            pid = self._pidfile(f"worker-{name}").read()
            statuses.append(
                ServiceStatus(name, pid, "", pid is not None, self.logs / f"{name}.log", "worker")
            )
        return statuses


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _require_free(host: str, port: int, what: str, setting: str) -> None:
    if port_open(host, port):
        raise StackError(
            f"port {port} on {host}, wanted for {what}, is taken by another process. Stop that "
            f"process, or choose another port with {setting}."
        )
