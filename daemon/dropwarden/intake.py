"""The snapshot type plugins receive (`Snapshot`), where plugins have always imported it from; the intake
stage itself is `dropwarden.judge.intake`."""

from dropwarden.judge.intake import Snapshot

__all__ = ["Snapshot"]
