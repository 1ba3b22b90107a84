"""Event schema v1: one envelope, typed bodies.

Every event is an immutable fact about a run. The envelope carries identity and order (event id,
run id, per-run sequence number); the body says what happened. Compatibility rules are in
``docs/schemas.md``: new fields are optional, unknown fields are tolerated, and the schema version
is bumped only for changes an older reader could misread.
"""

from __future__ import annotations

import itertools
import math
import sys
from datetime import datetime
from typing import Annotated, Any, Literal, TypeAlias, Union

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1
"""Version written by this release. Readers accept every version up to this one."""

# --- metric values: floats, with NaN and infinities kept ------------------------------------
# JSON has no NaN or Infinity. Like the protobuf JSON mapping, non-finite values travel as the
# strings "NaN", "Infinity" and "-Infinity", so a diverging loss is recorded as what it was
# instead of turning into null or failing the whole event.
NON_FINITE_TO_JSON = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_FLOAT_INT_MAX = int(sys.float_info.max)  # a larger int makes float() raise OverflowError


def parse_metric_value(value: Any) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        if abs(value) > _FLOAT_INT_MAX:  # pydantic turns a ValueError, not that, into a refusal
            bits = value.bit_length()
            raise ValueError(f"a metric value must fit in a float64, not a {bits}-bit integer")
        return float(value)
    if isinstance(value, str):
        special = NON_FINITE_TO_JSON.get(value)
        if special is not None:
            return special
        raise ValueError(
            f"a metric value must be a number, 'NaN', 'Infinity' or '-Infinity', not {value!r}"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"a metric value must be a number, not {type(value).__name__}")
    return float(value)


def dump_metric_value(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


MetricValue = Annotated[
    float,
    PlainValidator(parse_metric_value),
    PlainSerializer(dump_metric_value, when_used="json"),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]}]}),
]

Name = Annotated[str, Field(min_length=1, max_length=512)]
"""A metric, config or tag name: any unicode, but never empty and never absurdly long."""


class _Model(BaseModel):
    # Unknown fields are ignored, not rejected: a newer producer may add optional fields and an
    # older reader must still accept its events. The sink keeps the raw body, so nothing is lost.
    model_config = ConfigDict(extra="ignore", frozen=True)


# --- bodies -----------------------------------------------------------------------------------
class Environment(_Model):
    python: str = ""
    platform: str = ""
    hostname: str = ""
    executable: str = ""
    argv: list[str] = Field(default_factory=list)
    cwd: str = ""
    git_commit: str | None = None
    git_branch: str | None = None
    git_remote: str | None = None
    git_dirty: bool | None = None


class RunStarted(_Model):
    name: str | None = None
    config: dict[str, JsonValue] = Field(default_factory=dict)
    tags: list[Name] = Field(default_factory=list)
    group: str | None = None
    job_type: str | None = None
    notes: str | None = None
    environment: Environment = Field(default_factory=Environment)


class ConfigUpdated(_Model):
    config: dict[str, JsonValue]
    """The keys that changed, with their new values (a merge patch on the run's config)."""


class MetricsLogged(_Model):
    step: int = Field(ge=0)
    metrics: dict[Name, MetricValue]


class SummaryUpdated(_Model):
    summary: dict[Name, JsonValue]
    """Keys set explicitly by the user; other keys keep their derived value."""


class SystemMetrics(_Model):
    metrics: dict[Name, MetricValue]


class TagsUpdated(_Model):
    tags: list[Name]
    """The complete tag list after the change."""


class AlertRaised(_Model):
    title: str = Field(min_length=1, max_length=1024)
    text: str = ""
    level: Literal["info", "warn", "error"] = "info"


class Heartbeat(_Model):
    step: int | None = None
    """The last step logged so far, so a stalled run (alive but not stepping) is visible."""


class RunResumed(_Model):
    step: int | None = None
    """The step the resumed run continues from."""


class ArtifactFile(_Model):
    """One entry of an artifact's manifest."""

    path: str = Field(min_length=1, description="The entry's path inside the artifact.")
    digest: str = Field(description="'sha256:<hex>' of the content ('uri-sha256:' for a "
                        "reference that was not read).")  # fmt: skip
    size: int = Field(ge=0, description="Bytes (0 for a reference that was not read).")
    ref: str | None = Field(None, description="The URI of a reference entry (add_reference).")


class ArtifactLogged(_Model):
    name: Name
    type: str = Field(min_length=1, max_length=128)
    digest: str = Field(description="Content digest as 'algorithm:hex', e.g. 'sha256:ab12...'.")
    size: int = Field(ge=0)
    uri: str
    # Optional since 0.2 (compatibility rule 1): wandb.Artifact, use_artifact, save, log_code.
    aliases: list[Name] = Field(default_factory=list)
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    description: str | None = None
    files: list[ArtifactFile] = Field(
        default_factory=list,
        description="The manifest, sorted by path; cut to what fits one event (file_count "
        "says how many entries there are).",
    )
    file_count: int | None = Field(None, ge=0, description="Entries in the whole manifest.")
    use: bool = Field(False, description="True when the run used (read) the artifact as an "
                      "input (use_artifact) rather than produced it.")  # fmt: skip

    @field_validator("digest")
    @classmethod
    def _check_digest(cls, value: str) -> str:
        algorithm, sep, hexdigest = value.partition(":")
        if not sep or not algorithm or not hexdigest:
            raise ValueError("expected 'algorithm:hexdigest', e.g. 'sha256:...'")
        return value


_Edge = Annotated[float, Field(allow_inf_nan=False)]
_Count = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Histogram(_Model):
    """One histogram: ``len(counts) + 1`` ascending ``bins`` (edges), 1 to 512 ``counts``."""

    bins: list[_Edge] = Field(min_length=2, max_length=513)
    counts: list[_Count] = Field(min_length=1, max_length=512)

    @field_validator("bins")
    @classmethod
    def _ascending(cls, value: list[float]) -> list[float]:
        if any(b < a for a, b in itertools.pairwise(value)):
            raise ValueError("bin edges must be ascending")
        return value

    @model_validator(mode="after")
    def _one_more_edge(self) -> Histogram:
        if len(self.bins) != len(self.counts) + 1:
            raise ValueError(
                f"{len(self.counts)} counts need {len(self.counts) + 1} bin edges, not "
                f"{len(self.bins)}"
            )
        return self


class HistogramLogged(_Model):
    step: int = Field(ge=0, le=2**63 - 1)
    histograms: dict[Name, Histogram]


class MetricDefined(_Model):
    name: Name
    """A metric name, or a prefix pattern ending in ``*`` (``val/*``)."""
    summary: Literal["min", "max", "last", "mean"] | None = None
    """Which value stands for the metric in the run's summary; absent: this definition does
    not choose (the default, ``last``, or an earlier choice stands). Producers before 0.2
    always sent it."""
    step_metric: Name | None = None
    """The metric this one is plotted against (wandb's ``step_metric``)."""
    step_sync: bool | None = None
    """Whether a log without the step metric takes its last value (wandb's ``step_sync``)."""
    goal: Literal["minimize", "maximize"] | None = None
    """Whether lower or higher is better."""
    hidden: bool | None = None
    """Whether charts leave the metric out by default (wandb's ``hidden``)."""


class RunUpdated(_Model):
    """The run's display name or notes changed after it started (``run.name = ...``)."""

    name: str | None = None
    """The new name; absent: unchanged."""
    notes: str | None = None
    """The new notes; absent: unchanged."""


RunStatus = Literal["finished", "failed", "crashed", "killed"]


class RunFinished(_Model):
    exit_code: int = 0
    status: RunStatus = "finished"


# --- the envelope -----------------------------------------------------------------------------
ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
RUN_ID_PATTERN = r"^[A-Za-z0-9._:-]+$"


class Producer(_Model):
    sdk: str = Field(
        min_length=1, description="Name of the producing library, e.g. runstream-python."
    )
    version: str
    host: str = ""
    pid: int = Field(0, ge=0)


class _Envelope(_Model):
    id: str = Field(
        pattern=ID_PATTERN,
        description="Unique, time-ordered event id (UUIDv7), chosen by the producer once and "
        "kept on every retry: it is what makes delivery idempotent end to end.",
    )
    v: int = Field(ge=1, le=SCHEMA_VERSION, description="Schema version of this event.")
    project: Name
    run_id: Annotated[str, Field(min_length=1, max_length=128, pattern=RUN_ID_PATTERN)]
    seq: int = Field(ge=0, description="Per-run sequence number: 0, 1, 2... without gaps.")
    ts: AwareDatetime = Field(description="When the event happened, UTC, microseconds.")
    producer: Producer


class RunStartedEvent(_Envelope):
    """A run began."""

    type: Literal["run_started"] = "run_started"
    body: RunStarted


class ConfigUpdatedEvent(_Envelope):
    """Config keys changed."""

    type: Literal["config_updated"] = "config_updated"
    body: ConfigUpdated


class MetricsLoggedEvent(_Envelope):
    """Metric values at one step."""

    type: Literal["metrics_logged"] = "metrics_logged"
    body: MetricsLogged


class SummaryUpdatedEvent(_Envelope):
    """Summary values set by the user."""

    type: Literal["summary_updated"] = "summary_updated"
    body: SummaryUpdated


class SystemMetricsEvent(_Envelope):
    """Host and process metrics."""

    type: Literal["system_metrics"] = "system_metrics"
    body: SystemMetrics


class TagsUpdatedEvent(_Envelope):
    """The run's tags changed."""

    type: Literal["tags_updated"] = "tags_updated"
    body: TagsUpdated


class AlertRaisedEvent(_Envelope):
    """The user raised an alert."""

    type: Literal["alert_raised"] = "alert_raised"
    body: AlertRaised


class HeartbeatEvent(_Envelope):
    """The run's process is alive."""

    type: Literal["heartbeat"] = "heartbeat"
    body: Heartbeat


class RunResumedEvent(_Envelope):
    """A run continued after a restart."""

    type: Literal["run_resumed"] = "run_resumed"
    body: RunResumed


class ArtifactLoggedEvent(_Envelope):
    """Artifact metadata was recorded."""

    type: Literal["artifact_logged"] = "artifact_logged"
    body: ArtifactLogged


class HistogramLoggedEvent(_Envelope):
    """Histograms at one step (``runstream.Histogram``, ``run.watch``)."""

    type: Literal["histogram_logged"] = "histogram_logged"
    body: HistogramLogged


class MetricDefinedEvent(_Envelope):
    """The user chose how a metric is summarised."""

    type: Literal["metric_defined"] = "metric_defined"
    body: MetricDefined


class RunUpdatedEvent(_Envelope):
    """The run's name or notes changed."""

    type: Literal["run_updated"] = "run_updated"
    body: RunUpdated


class RunFinishedEvent(_Envelope):
    """A run ended."""

    type: Literal["run_finished"] = "run_finished"
    body: RunFinished


BODIES: dict[str, type[_Model]] = {
    "run_started": RunStarted,
    "config_updated": ConfigUpdated,
    "metrics_logged": MetricsLogged,
    "summary_updated": SummaryUpdated,
    "system_metrics": SystemMetrics,
    "tags_updated": TagsUpdated,
    "alert_raised": AlertRaised,
    "heartbeat": Heartbeat,
    "run_resumed": RunResumed,
    "artifact_logged": ArtifactLogged,
    "metric_defined": MetricDefined,
    "run_updated": RunUpdated,
    "run_finished": RunFinished,
    "histogram_logged": HistogramLogged,
}
"""Event type name -> body model. The type names are the wire values of ``type``."""

EVENT_MODELS: dict[str, type[_Envelope]] = {
    "run_started": RunStartedEvent,
    "config_updated": ConfigUpdatedEvent,
    "metrics_logged": MetricsLoggedEvent,
    "summary_updated": SummaryUpdatedEvent,
    "system_metrics": SystemMetricsEvent,
    "tags_updated": TagsUpdatedEvent,
    "alert_raised": AlertRaisedEvent,
    "heartbeat": HeartbeatEvent,
    "run_resumed": RunResumedEvent,
    "artifact_logged": ArtifactLoggedEvent,
    "metric_defined": MetricDefinedEvent,
    "run_updated": RunUpdatedEvent,
    "run_finished": RunFinishedEvent,
    "histogram_logged": HistogramLoggedEvent,
}

EventType = Literal[
    "run_started",
    "config_updated",
    "metrics_logged",
    "summary_updated",
    "system_metrics",
    "tags_updated",
    "alert_raised",
    "heartbeat",
    "run_resumed",
    "artifact_logged",
    "metric_defined",
    "run_updated",
    "run_finished",
    "histogram_logged",
]

Event: TypeAlias = Annotated[
    Union[  # noqa: UP007 - a discriminated union needs the explicit Union here
        RunStartedEvent,
        ConfigUpdatedEvent,
        MetricsLoggedEvent,
        SummaryUpdatedEvent,
        SystemMetricsEvent,
        TagsUpdatedEvent,
        AlertRaisedEvent,
        HeartbeatEvent,
        RunResumedEvent,
        ArtifactLoggedEvent,
        MetricDefinedEvent,
        RunUpdatedEvent,
        RunFinishedEvent,
        HistogramLoggedEvent,
    ],
    Field(discriminator="type"),
]
"""Any runstream event; ``type`` selects the body."""

AnyEvent = _Envelope
"""Base class of every event model, for type hints."""

__all__ = [
    "BODIES",
    "EVENT_MODELS",
    "SCHEMA_VERSION",
    "AlertRaised",
    "AnyEvent",
    "ArtifactFile",
    "ArtifactLogged",
    "ConfigUpdated",
    "Environment",
    "Event",
    "EventType",
    "Heartbeat",
    "Histogram",
    "HistogramLogged",
    "MetricDefined",
    "MetricValue",
    "MetricsLogged",
    "Producer",
    "RunFinished",
    "RunResumed",
    "RunStarted",
    "RunStatus",
    "RunUpdated",
    "SummaryUpdated",
    "SystemMetrics",
    "TagsUpdated",
    "datetime",
]
