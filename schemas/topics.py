"""Topic names, keys and configurations: the one place they are written down.

Every topic is keyed by run id, so all events of a run land on one partition and stay in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    compacted: bool
    description: str
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Topics:
    """Topic names under one prefix (``runstream`` by default)."""

    prefix: str = "runstream"

    @property
    def events(self) -> str:
        """Every event every producer sent, immutable; the source of truth."""
        return f"{self.prefix}.events"

    @property
    def dead_letters(self) -> str:
        """Messages a consumer could not process, with the reason in headers."""
        return f"{self.prefix}.dlq"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}.alerts"

    @property
    def alert_deliveries(self) -> str:
        """Delivery state of each alert per webhook, from the notifier (a record per change)."""
        return f"{self.prefix}.alert-deliveries"

    @property
    def runs(self) -> str:
        """Latest state of each run (compacted)."""
        return f"{self.prefix}.runs"

    @property
    def summaries(self) -> str:
        """Latest metric summaries of each run (compacted)."""
        return f"{self.prefix}.summaries"

    @property
    def processor_ticks(self) -> str:
        """The processors' own clock: a tick per silent run, on the run's partition."""
        return f"{self.prefix}.processor-ticks"

    def specs(self) -> list[TopicSpec]:
        compact = {"cleanup.policy": "compact"}
        # Events are kept forever: derived state is rebuilt by replaying them.
        forever = {"retention.ms": "-1", "compression.type": "producer"}
        an_hour = {"retention.ms": "3600000"}
        return [
            TopicSpec(self.events, "run_id", False, "all run events", forever),
            TopicSpec(self.dead_letters, "original key", False, "undeliverable messages"),
            TopicSpec(self.alerts, "run_id", False, "alert firings and resolutions"),
            TopicSpec(self.alert_deliveries, "run_id", False, "alert delivery per webhook"),
            TopicSpec(self.runs, "run_id", True, "run state", compact),
            TopicSpec(self.summaries, "run_id/metric", True, "metric summaries", compact),
            TopicSpec(self.processor_ticks, "run", False, "crash checks", an_hour),
        ]
