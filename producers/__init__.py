"""The producer SDK: what training code calls. Depends on runstream.schemas only."""

from runstream.producers.run import DisabledRun, FinishResult, ResumeError, Run, init

__all__ = ["DisabledRun", "FinishResult", "ResumeError", "Run", "init"]
