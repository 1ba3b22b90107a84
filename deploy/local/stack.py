"""``runstream dev``: the whole pipeline on one machine, as local background processes.

Kafka (KRaft, from Maven jars) and ClickHouse (chdb-core) on loopback, the topics, the tables and
the pipeline's workers. Everything lives under ``settings.home``::

    kafka/data  clickhouse/data    the services' data: survives `down` then `up`
    run/        pid files, ClickHouse's config.xml and stop FIFO, the lock of `up`/`down`
    logs/       one log per process
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from runstream.deploy.local.admin import ensure_topics
from runstream.deploy.local.clickhouse import ClickHouseLayout
from runstream.deploy.local.kafka import KafkaLayout
from runstream.deploy.local.ports import is_loopback, port_free, port_open
from runstream.deploy.local.processes import (
    PidFile,
    exclusive,
    process_alive,
    spawn,
    tail,
    terminate,
)
from runstream.deploy.local.processes import kill as kill_process
from runstream.deploy.local.reader_user import READER_USER, local_reader, password_path
from runstream.deploy.local.workers import WorkerSpec, child_env, default_workers, settings_env
from runstream.errors import StackError
from runstream.settings import Settings

SERVICES = ("kafka", "clickhouse")
# A worker that cannot start (bad settings, a missing extra) dies within about a second: `up`
# watches that long, so the failure is reported by `up` instead of found later by `status`.
WORKER_GRACE_SECONDS = 1.0
_EXPECTED_WORKERS = "workers"

State = Literal["healthy", "unhealthy", "stopped"]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    address: str
    healthy: bool
    log: Path
    detail: str = ""

    @property
    def state(self) -> State:
        if self.pid is None:
            return "stopped"
        return "healthy" if self.healthy else "unhealthy"


class LocalStack:
    """Start, stop and inspect the local stack of one home.

    ``workers`` defaults to :func:`~runstream.deploy.local.workers.default_workers` (the sink);
    pass ``()`` for Kafka and ClickHouse only.
    """

    def __init__(self, settings: Settings, workers: Sequence[WorkerSpec] | None = None) -> None:
        self.settings = settings
        self.workers = list(default_workers() if workers is None else workers)
        self.home = settings.home
        self.run_dir = self.home / "run"
        self.logs = self.home / "logs"
        self.kafka = KafkaLayout(settings)
        self.clickhouse = ClickHouseLayout(settings)

    # --- up -----------------------------------------------------------------------------------
    def up(self, timeout: float = 180.0) -> list[ServiceStatus]:
        """Start what does not run yet, wait until all of it is healthy, create topics and
        tables, start the workers. Idempotent: what runs and is healthy is left alone."""
        deadline = time.monotonic() + timeout
        self._check_addresses()
        with self._locked(timeout):
            self._start_services(SERVICES, deadline)
            ensure_topics(self.settings, timeout=max(5.0, deadline - time.monotonic()))
            from runstream.sinks.migrations import migrate

            migrate(self.settings)
            self._start_workers()
        return self.status()

    def start_service(self, name: str, timeout: float = 120.0) -> None:
        """Start ``kafka`` or ``clickhouse`` alone (again) and wait until it is healthy."""
        self._check_service(name)
        self._check_addresses()
        with self._locked(timeout):
            self._start_services((name,), time.monotonic() + timeout)

    def _check_addresses(self) -> None:
        plain_http = self.settings.clickhouse_url.startswith("http:")
        if not is_loopback(self.clickhouse.host) or not plain_http:
            raise StackError(
                f"the local ClickHouse serves plain HTTP on loopback only, and "
                f"{self.settings.clickhouse_url} is not that: its user 'default' has no password "
                "and can read any file. Use http://127.0.0.1:<port> in RUNSTREAM_CLICKHOUSE_URL "
                "(--clickhouse)."
            )
        if not is_loopback(self.kafka.host) or "," in self.settings.kafka_bootstrap:
            raise StackError(
                f"the local Kafka is one broker on loopback without authentication, and "
                f"{self.settings.kafka_bootstrap!r} is not that. Use 127.0.0.1:<port> in "
                "RUNSTREAM_KAFKA_BOOTSTRAP (--kafka)."
            )
        ports = [
            ("Kafka (RUNSTREAM_KAFKA_BOOTSTRAP)", self.kafka.port),
            ("the Kafka controller (RUNSTREAM_KAFKA_CONTROLLER_PORT)", self.kafka.controller_port),
            ("ClickHouse (RUNSTREAM_CLICKHOUSE_URL)", self.clickhouse.http_port),
        ]
        for i, (what, port) in enumerate(ports):
            for other, other_port in ports[i + 1 :]:
                if port == other_port:
                    raise StackError(f"port {port} is set for both {what} and {other}: change one")

    def _start_services(self, names: Sequence[str], deadline: float) -> None:
        running = {name: self._pidfile(name).read() for name in names}
        for name, pid in running.items():
            if pid is not None:
                self._check_same_address(name)
        self._preflight([name for name, pid in running.items() if pid is None])
        starters: dict[str, Callable[[int | None, float], None]] = {
            "kafka": self._start_kafka,
            "clickhouse": self._start_clickhouse,
        }
        # In parallel: the JVM's start and ClickHouse's start overlap.
        with ThreadPoolExecutor(len(names), thread_name_prefix="dev-up") as pool:
            futures = [pool.submit(starters[name], running[name], deadline) for name in names]
        errors = [exc for exc in (f.exception() for f in futures) if exc is not None]
        if len(errors) == 1 or (errors and not all(isinstance(e, StackError) for e in errors)):
            raise errors[0]
        if errors:
            raise StackError("\n\n".join(str(e) for e in errors))

    def _check_same_address(self, name: str) -> None:
        recorded = self._pidfile(name).address()
        wanted = self._address(name)
        if recorded and recorded != wanted:
            raise StackError(
                f"{_LABELS[name]} of {self.home} already runs at {recorded}, not at {wanted}. "
                "Use the same address, or restart it there: runstream dev down, then up."
            )

    def _preflight(self, to_start: Sequence[str]) -> None:
        """Everything that can be checked before starting anything, so nothing half-starts."""
        taken: list[tuple[str, int, str, str]] = []  # host, port, for what, which setting
        if "kafka" in to_start:
            self.kafka.java()
            if not self.kafka.jars_cached:
                self.kafka.require_maven()
            host, port, cport = self.kafka.host, self.kafka.port, self.kafka.controller_port
            if not port_free(host, port):
                taken.append((host, port, "Kafka", "RUNSTREAM_KAFKA_BOOTSTRAP (--kafka)"))
            if not port_free(host, cport):
                setting = "RUNSTREAM_KAFKA_CONTROLLER_PORT (--kafka-controller-port)"
                taken.append((host, cport, "the Kafka controller", setting))
        if "clickhouse" in to_start:
            self.clickhouse.require_engine()
            holder = self.clickhouse.data_locked_by()
            if holder is not None:
                raise StackError(
                    f"ClickHouse's data directory {self.clickhouse.data} is locked by {holder}, "
                    "another ClickHouse server. Stop that process, or give this stack its own "
                    "home with RUNSTREAM_HOME (--home)."
                )
            host, port = self.clickhouse.host, self.clickhouse.http_port
            if not port_free(host, port):
                taken.append((host, port, "ClickHouse", "RUNSTREAM_CLICKHOUSE_URL (--clickhouse)"))
        if taken:
            raise StackError(
                "\n".join(
                    f"port {port} on {host}, wanted for {what}, is taken by another process: "
                    f"stop that process, or choose another port with {setting}."
                    for host, port, what, setting in taken
                )
            )

    def _start_kafka(self, pid: int | None, deadline: float) -> None:
        if pid is None:
            argv = self.kafka.prepare()
            pid = spawn(argv, log=self.kafka.stdout, cwd=self.kafka.root)
            self._pidfile("kafka").write(pid, self._address("kafka"))
        logs = [self.kafka.log, self.kafka.stdout]
        self._wait_healthy("kafka", pid, self.kafka.healthy, logs, deadline)

    def _start_clickhouse(self, pid: int | None, deadline: float) -> None:
        ch = self.clickhouse
        if pid is None:
            # Best effort: the native protocol is a convenience for clickhouse-client and the
            # like; when its port is taken, HTTP (all runstream uses) still starts.
            tcp = ch.derived_tcp_port
            if tcp in (self.kafka.port, self.kafka.controller_port) or not port_free(ch.host, tcp):
                tcp = 0
            env = child_env(ch.prepare_users())
            pid = spawn(ch.argv(tcp), log=ch.log, cwd=self.home, env=env)
            self._pidfile("clickhouse").write(pid, self._address("clickhouse"))
        self._wait_healthy("clickhouse", pid, ch.healthy, [ch.log], deadline)

    def _wait_healthy(
        self, name: str, pid: int, healthy: Callable[[], bool], logs: list[Path], deadline: float
    ) -> None:
        while not healthy():
            if not process_alive(pid):
                self._pidfile(name).clear()
                raise StackError(_died_message(_LABELS[name], logs, self.home))
            if time.monotonic() > deadline:
                raise StackError(
                    f"{_LABELS[name]} (pid {pid}) still runs but did not become healthy in time. "
                    f"Its log {logs[0]} ends with:\n{tail(logs[0])}\n"
                    "Stop it with 'runstream dev down', or give 'up' more time (--timeout)."
                )
            time.sleep(0.1)

    def _start_workers(self) -> None:
        env = child_env(settings_env(self.settings))
        fresh: list[tuple[WorkerSpec, int]] = []
        for worker in self.workers:
            pidfile = self._pidfile(f"worker-{worker.name}")
            if pidfile.read() is None:
                pid = spawn(worker.argv, log=self._worker_log(worker.name), cwd=self.home, env=env)
                pidfile.write(pid)
                fresh.append((worker, pid))
        self._expected_workers_file().write_text(
            "".join(f"{w.name}\n" for w in self.workers), encoding="utf-8"
        )
        grace_end = time.monotonic() + WORKER_GRACE_SECONDS
        while fresh and time.monotonic() < grace_end:
            for worker, pid in fresh:
                if not process_alive(pid):
                    self._pidfile(f"worker-{worker.name}").clear()
                    log = self._worker_log(worker.name)
                    raise StackError(
                        f"worker {worker.name!r} ({' '.join(worker.argv)}) exited right after "
                        f"it started. Its log {log} ends with:\n{tail(log)}"
                    )
            time.sleep(0.1)

    # --- down -----------------------------------------------------------------------------------
    def down(self, timeout: float = 30.0) -> None:
        """Stop the workers, then Kafka, then ClickHouse. Harmless when nothing runs."""
        if not self.run_dir.exists():
            return  # never started in this home
        with self._locked(max(timeout, 10.0)):
            # Workers first: a sink finishing its batch still needs Kafka and ClickHouse.
            names = sorted({w.name for w in self.workers} | self._worker_pid_names())
            pidfiles = [self._pidfile(f"worker-{name}") for name in names]
            terminate([pid for pid in (p.read() for p in pidfiles) if pid is not None], timeout)
            for pidfile in pidfiles:
                pidfile.clear()
            self._stop_service("kafka", kill_it=False, timeout=timeout)
            self._stop_service("clickhouse", kill_it=False, timeout=timeout)
            self._expected_workers_file().unlink(missing_ok=True)

    def stop_service(self, name: str, *, kill: bool = False, timeout: float = 30.0) -> None:
        """Stop ``kafka`` or ``clickhouse`` alone; ``kill=True`` sends SIGKILL, as a crash would."""
        self._check_service(name)
        with self._locked(max(timeout, 10.0)):
            self._stop_service(name, kill_it=kill, timeout=timeout)

    def _stop_service(self, name: str, *, kill_it: bool, timeout: float) -> None:
        pidfile = self._pidfile(name)
        pid = pidfile.read()
        if pid is not None:
            if kill_it:
                kill_process(pid)
            elif name == "clickhouse":
                self.clickhouse.stop(pid, timeout)
            else:
                terminate([pid], timeout)
        pidfile.clear()

    # --- status ---------------------------------------------------------------------------------
    def status(self) -> list[ServiceStatus]:
        """Kafka, ClickHouse, then each worker: pid, address, health, log."""
        kafka, ch = self.kafka, self.clickhouse
        ch_detail = f"database {self.settings.clickhouse_database}"
        tcp_port = self._running_ch_tcp_port()
        if tcp_port:
            ch_detail += f", native protocol {ch.host}:{tcp_port}"
        if local_reader(self.settings) is not None:
            ch_detail += f", reader {READER_USER} (password in {password_path(self.home)})"
        statuses = [
            self._service_status(
                "kafka",
                kafka.healthy,
                kafka.log,
                f"controller {kafka.host}:{kafka.controller_port}",
            ),
            self._service_status("clickhouse", ch.healthy, ch.log, ch_detail),
        ]
        for name in self._worker_names():
            pid = self._pidfile(f"worker-{name}").read()
            detail = "worker" if pid is not None else "worker not running; see its log"
            address = ""
            healthy = pid is not None
            if name == "sink" and pid is not None and self.settings.sink_metrics_port:
                address = f"http://127.0.0.1:{self.settings.sink_metrics_port}/metrics"
                healthy, detail = sink_health(address)
            statuses.append(
                ServiceStatus(name, pid, address, healthy, self._worker_log(name), detail)
            )
        return statuses

    def _service_status(
        self, name: str, healthy: Callable[[], bool], log: Path, detail: str
    ) -> ServiceStatus:
        pidfile = self._pidfile(name)
        pid = pidfile.read()
        address = self._address(name)
        if pid is None:
            host, port = self._host_port(name)
            if port_open(host, port, timeout=0.2):
                detail = f"port {port} is in use by another process"
            return ServiceStatus(name, None, address, False, log, detail)
        recorded = pidfile.address()
        if recorded and recorded != address:
            return ServiceStatus(name, pid, recorded, False, log, f"settings say {address}")
        return ServiceStatus(name, pid, address, healthy(), log, detail)

    def _running_ch_tcp_port(self) -> int:
        if self._pidfile("clickhouse").read() is None:
            return 0
        return self.clickhouse.serving_tcp_port()

    # --- helpers --------------------------------------------------------------------------------
    def _pidfile(self, name: str) -> PidFile:
        return PidFile(self.run_dir / f"{name}.pid")

    def _worker_log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def _address(self, name: str) -> str:
        if name == "kafka":
            return f"{self.kafka.host}:{self.kafka.port}"
        return self.settings.clickhouse_url

    def _host_port(self, name: str) -> tuple[str, int]:
        if name == "kafka":
            return self.kafka.host, self.kafka.port
        return self.clickhouse.host, self.clickhouse.http_port

    def _expected_workers_file(self) -> Path:
        return self.run_dir / _EXPECTED_WORKERS

    def _worker_pid_names(self) -> set[str]:
        if not self.run_dir.exists():
            return set()
        return {p.stem.removeprefix("worker-") for p in self.run_dir.glob("worker-*.pid")}

    def _worker_names(self) -> list[str]:
        """The workers the last `up` was asked for (else this stack's), plus any still running."""
        try:
            text = self._expected_workers_file().read_text(encoding="utf-8")
            names = text.split()
        except OSError:
            names = [w.name for w in self.workers]
        return names + sorted(self._worker_pid_names() - set(names))

    @contextlib.contextmanager
    def _locked(self, timeout: float) -> Iterator[None]:
        with exclusive(
            self.run_dir / "stack.lock", timeout=timeout, holder=f"the local stack in {self.home}"
        ):
            yield

    @staticmethod
    def _check_service(name: str) -> None:
        if name not in SERVICES:
            raise StackError(f"unknown service {name!r}: expected 'kafka' or 'clickhouse'")


_LABELS = {"kafka": "Kafka", "clickhouse": "ClickHouse"}

# What a dying service's log says, and what to do about it.
_HINTS = (
    (("cannot lock file", "failed to acquire lock"),
     "Its data directory is locked by another process (another server on the same data): stop "
     "that process, or give this stack its own home with RUNSTREAM_HOME (--home)."),
    (("address already in use", "bindexception"),
     "One of its ports is taken by another process: stop it, or choose other ports "
     "(RUNSTREAM_KAFKA_BOOTSTRAP, RUNSTREAM_KAFKA_CONTROLLER_PORT, RUNSTREAM_CLICKHOUSE_URL)."),
    (("unsupportedclassversionerror",),
     "Its Java is too old: install a JDK 17+, e.g. apt-get install openjdk-17-jre-headless."),
    (("outofmemoryerror",),
     "It ran out of memory: raise RUNSTREAM_KAFKA_HEAP (e.g. 2g)."),
    (("initial heap size",),
     "Its heap is too small: RUNSTREAM_KAFKA_HEAP must be at least 256m."),
    (("invalid cluster.id", "inconsistentclusteridexception"),
     "Its data directory belongs to another Kafka cluster: move <home>/kafka away to start "
     "with empty Kafka data."),
)  # fmt: skip


def _died_message(label: str, logs: list[Path], home: Path) -> str:
    text = "\n".join(t for t in (tail(log) for log in logs) if t)
    lowered = text.lower()
    hint = next((h for needles, h in _HINTS if any(n in lowered for n in needles)), "")
    hint = hint.replace("<home>", str(home))
    where = " and ".join(str(log) for log in logs)
    return f"{label} exited during start-up. {hint} Its log ({where}) ends with:\n{text}"


def sink_health(url: str) -> tuple[bool, str]:
    """Whether the sink makes progress, and its numbers, from its /metrics endpoint.

    Unhealthy when the sink says so: behind the end of its partitions with nothing committed
    for a while (ClickHouse or Kafka away or refusing, a batch it cannot get past). A sink whose
    endpoint does not answer is judged by its process alone: it opens the endpoint only once it
    has connected to ClickHouse and Kafka, which takes a few seconds after `up`.
    """
    from runstream.sinks.observability import scrape

    try:
        m = scrape(url)
    except Exception:
        return True, "worker (its /metrics endpoint does not answer yet)"
    healthy = m.get("runstream_sink_healthy", 1.0) == 1.0
    lag = m.get("runstream_sink_lag_messages", 0)
    prefix = "runstream_sink_partition_lag_messages{"
    behind = sorted(
        (name.removeprefix(prefix).rstrip("}"), value)
        for name, value in m.items()
        if name.startswith(prefix) and value > 0
    )
    per_partition = ""
    if behind:
        shown = ", ".join(
            f"{_label(labels, 'topic')}[{_label(labels, 'partition')}] {value:.0f}"
            for labels, value in behind[:6]
        )
        more = f" and {len(behind) - 6} more" if len(behind) > 6 else ""
        per_partition = f" ({shown}{more})"
    since = m.get("runstream_sink_seconds_since_last_write", 0)
    state = ""
    if not healthy:
        stalled = m.get("runstream_sink_stalled_seconds", 0)
        state = f"STUCK for {stalled:.0f} s: nothing committed while behind; see its log. "
    elif m.get("runstream_sink_paused"):
        state = "RETRYING (ClickHouse or Kafka refuses); "
    detail = (
        f"{state}{m.get('runstream_sink_events_total', 0):.0f} events, "
        f"lag {lag:.0f} messages{per_partition}, "
        f"last write {since:.0f} s ago, "
        f"{m.get('runstream_sink_dead_letters_total', 0):.0f} dead letters, "
        f"last insert {m.get('runstream_sink_last_insert_seconds', 0) * 1000:.0f} ms"
    )
    return healthy, detail


def _label(labels: str, name: str) -> str:
    for part in labels.split(","):
        key, _, value = part.partition("=")
        if key == name:
            return value.strip('"')
    return "?"
