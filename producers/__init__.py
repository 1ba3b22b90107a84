"""The producer SDK: what training code calls. Depends on runstream.schemas only."""

from runstream.producers.run import FinishResult, Run, init

__all__ = ["FinishResult", "Run", "init"]
