"""Backoff for loops that must outlive a failing dependency."""

from __future__ import annotations

from tenacity import RetryCallState, wait_exponential_jitter


class Backoff:
    """Exponential backoff with jitter, reset after a success.

    The waits come from tenacity's exponential-jitter strategy; this class only
    keeps the failure count, for loops that run forever rather than retrying
    one call.
    """

    def __init__(self, initial: float = 0.1, maximum: float = 10.0) -> None:
        self._wait = wait_exponential_jitter(
            multiplier=initial, max=maximum, jitter=initial
        )
        self.failures = 0

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait before retrying."""
        self.failures += 1
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = self.failures
        return float(self._wait(state))

    def reset(self) -> None:
        self.failures = 0
