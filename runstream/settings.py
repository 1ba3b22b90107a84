"""The one settings object every entry point reads.

Precedence: explicit arguments, then ``RUNSTREAM_<FIELD>`` environment variables, then the
defaults below. Values are validated once, here, so a typo fails at start-up with the name of the
variable rather than deep inside a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from runstream.errors import SettingsError

ENV_PREFIX = "RUNSTREAM_"

Mode = Literal["online", "offline", "disabled"]


def _default_home() -> Path:
    return Path.home() / ".runstream"


def _default_cache() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "runstream"


class Settings(BaseModel):
    """Every knob of runstream. Build it with :meth:`Settings.load`."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    # --- where the services are -----------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    clickhouse_url: str = Field("http://127.0.0.1:8123", description="ClickHouse HTTP URL.")
    clickhouse_database: str = Field("runstream", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    clickhouse_cluster: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$",
        description="ClickHouse cluster to create the schema on (replicated, distributed); "
        "unset for one server.",
    )
    topic_prefix: str = Field(
        "runstream", pattern=r"^[A-Za-z0-9._-]+$", description="Prefix of every topic name."
    )
    topic_partitions: int = Field(6, ge=1, le=1000)
    topic_replication: int = Field(1, ge=1, le=10)

    # --- the SDK ----------------------------------------------------------------------------
    project: str = Field("uncategorized", min_length=1, max_length=256)
    mode: Mode = "online"
    dir: Path = Field(
        Path(".runstream"),
        description="Local directory of the SDK's spool. Hidden, like .git: a directory named "
        "runstream in the working directory would shadow the package (a namespace package) "
        "for the next `import runstream` there.",
    )
    run_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._:-]{1,128}$", description="Run id to use (with resume)."
    )
    resume: Literal["allow", "must", "never"] | None = Field(
        None, description="Continue run `run_id`: allow (if it exists), must, never."
    )
    finish_timeout: float = Field(5.0, ge=0, description="Seconds finish() waits for delivery.")
    heartbeat_interval: float = Field(10.0, gt=0, description="Seconds between heartbeats.")
    system_metrics_interval: float = Field(
        10.0, ge=0, description="Seconds between system metrics samples; 0 turns them off."
    )
    spool_max_mb: float = Field(
        1024,
        gt=0,
        description="Per run: most data kept on disk (MiB; fractions allowed) while Kafka is "
        "away; past it metric, heartbeat and system-metric events are dropped and counted.",
    )
    keep_spool: bool = Field(
        False, description="Keep spool segments after Kafka acknowledged them (for audits)."
    )
    producer_linger_ms: float = Field(20.0, ge=0)

    # --- the sink ---------------------------------------------------------------------------
    sink_group: str = Field("runstream-sink", min_length=1)
    processor_group: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="The processors' faust app id (consumer group, changelog topic prefix); "
        "default '<topic_prefix>-processors'. A new one rebuilds its state from the first event.",
    )
    alert_rules: Path | None = Field(
        None,
        description="TOML file of alert rules (runstream alerts add|ls|rm edit it); default "
        "<home>/alerts.toml. The processors reload it when it changes.",
    )
    webhooks: Path | None = Field(
        None, description="TOML file of the notifier's webhooks; default <home>/webhooks.toml."
    )
    processor_batch_events: int = Field(
        20_000,
        ge=1,
        le=200_000,
        description="Most events the processors fold per batch (1: one by one). Batches take "
        "what has arrived, so they are this large only with a backlog.",
    )
    processor_heartbeat_timeout: float | None = Field(
        None,
        gt=0,
        description="Seconds of silence after which a run is crashed; default 3 x "
        "heartbeat_interval.",
    )
    sink_batch_rows: int = Field(50_000, ge=1)
    sink_batch_seconds: float = Field(1.0, gt=0)
    sink_snapshot_seconds: float = Field(
        1.0,
        ge=0,
        le=60.0,
        description=(
            "Seconds between refreshes of the stored run rows that runs_current reads (each"
            " costs a query); batches' offsets are committed at each refresh."
        ),
    )
    sink_session_timeout: float = Field(
        10.0,
        ge=6.0,
        le=300.0,
        description="Seconds before a sink that died loses its partitions to the others.",
    )
    sink_metrics_host: str = Field(
        "127.0.0.1",
        description="Address of the sink's /metrics endpoint; 0.0.0.0 in a container, so "
        "Prometheus and probes reach it.",
    )
    sink_metrics_port: int = Field(
        9465, ge=0, le=65535, description="Port of the sink's /metrics endpoint; 0 turns it off."
    )

    # --- the web UI (runstream ui, and the ui worker of runstream dev up) ------------------
    ui_host: str = Field(
        "127.0.0.1", description="Address `runstream ui` binds: loopback unless told otherwise."
    )
    ui_port: int = Field(8080, ge=1, le=65535, description="Port of `runstream ui`.")
    ui_token: SecretStr | None = Field(
        None,
        description="A token the UI requires (bearer, basic-auth password or ?token=); "
        "docs/ui.md. Needed on any address but loopback.",
    )

    # --- the read side (runstream.read: the Python API, runstream query, the UI) -----------
    read_max_execution_time: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="Seconds a read query may run before ClickHouse stops it (max_execution_time).",
    )
    read_max_memory_usage: int = Field(
        2 * 1024**3,
        ge=1024**2,
        description="Bytes of memory a read query may use on one server (max_memory_usage).",
    )
    read_max_result_rows: int = Field(
        10_000_000,
        ge=1,
        description="Most rows a read query may return (max_result_rows); past it the query fails "
        "and says so. Streams (history, export) are bounded by this too: raise it for them.",
    )
    read_clickhouse_user: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$",
        description="ClickHouse user of the read side (deploy/ ships `runstream_reader`, read-only "
        "with a quota); default: the user of clickhouse_url.",
    )
    read_clickhouse_password: SecretStr | None = Field(
        None, description="Password of read_clickhouse_user (default: that of clickhouse_url)."
    )

    # --- the local stack (runstream dev) ----------------------------------------------------
    home: Path = Field(default_factory=_default_home, description="Data of the local stack.")
    cache_dir: Path = Field(default_factory=_default_cache, description="Downloaded Kafka jars.")
    kafka_controller_port: int = Field(9093, ge=1, le=65535)
    kafka_version: str = Field("4.0.2", pattern=r"^4\.0\.\d+$")
    kafka_heap: str = Field("1g", pattern=r"^\d+[mg]$")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    @field_validator("clickhouse_url")
    @classmethod
    def _check_clickhouse_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected http://host:port, got {value!r}")
        return value.rstrip("/")

    @property
    def clickhouse_url_redacted(self) -> str:
        """The URL without its password, for logs and error messages."""
        parts = urlsplit(self.clickhouse_url)
        if parts.password is None:
            return self.clickhouse_url
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def webhooks_path(self) -> Path:
        return self.webhooks or self.home / "webhooks.toml"

    @property
    def alert_rules_path(self) -> Path:
        return self.alert_rules or self.home / "alerts.toml"

    @field_validator("home", "cache_dir", "dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    # --- derived values ---------------------------------------------------------------------
    @property
    def kafka_host_port(self) -> tuple[str, int]:
        """Host and port of the first bootstrap server (where ``runstream dev`` listens)."""
        host, _, port = self.kafka_bootstrap.split(",")[0].strip().rpartition(":")
        return host, int(port)

    @property
    def clickhouse_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.clickhouse_url)
        default = 443 if parts.scheme == "https" else 8123
        return parts.hostname or "127.0.0.1", parts.port or default

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Arguments over ``RUNSTREAM_*`` environment variables over defaults.

        Arguments whose value is ``None`` count as not given, so callers can pass their own
        optional parameters straight through.
        """
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        from_env: dict[str, str] = {}
        for name in cls.model_fields:
            raw = source.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = raw
                from_env[name] = ENV_PREFIX + name.upper()
        unknown = set(overrides) - set(cls.model_fields)
        if unknown:
            raise SettingsError(
                f"unknown setting(s) {', '.join(sorted(unknown))}; "
                f"known settings are {', '.join(cls.model_fields)}"
            )
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                name = str(err["loc"][0]) if err["loc"] else "?"
                where = f"{from_env[name]}" if name in from_env else f"setting '{name}'"
                problems.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
            raise SettingsError("invalid runstream settings:\n  " + "\n  ".join(problems)) from None

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with some values replaced, validated like :meth:`load`."""
        values = self.model_dump()
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return Settings.model_validate(values)
        except ValidationError as exc:
            raise SettingsError(f"invalid runstream settings: {exc}") from None
