"""The producer SDK: what training code calls. Depends on runstream.schemas only."""

from runstream.producers.ending import FinishResult
from runstream.producers.run import ResumeError, Run
from runstream.producers.start import DisabledRun, init

__all__ = ["DisabledRun", "FinishResult", "ResumeError", "Run", "init"]
