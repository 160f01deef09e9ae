"""The inference client's errors, and what each means for a retry (criteo_monitoring.__main__)."""


class ReplayError(RuntimeError):
    """The replay could not go on (Triton kept failing); the message says why."""


class ReplayUsageError(ReplayError):
    """The replay was asked for something it cannot do (bad settings): no retry helps."""
