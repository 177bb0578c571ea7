"""The one failure a shared host may legitimately cause: the library's "too noisy" refusal.

The latency tests time tiny models (~1 ms calls), which a busy host (other virtual machines on
the same cores, invisible from inside) can spread beyond the measurement bounds. The library
then refuses, as it should, with "too noisy to measure ..." (or, where the host's speed moved
between a profile and the search that uses it, "the latency model no longer predicts ...").
Such a test or fixture is run again, at most twice, after a pause; where the host stays that
noisy over all three tries the test is skipped with the refusal as its reason (the code did what
it must: say so and stop). Every other failure is reported at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

NOISY = (
    "too noisy to measure",
    "the latency model no longer predicts",
    "the latency it was profiled at",  # a host whose speed moved >2x between profile and search
)
RETRIES = 2

T = TypeVar("T")


def retry_noisy(
    call: Callable[[], T], what: str, *, pause_s: float = 3.0, any_failure: bool = False
) -> T:
    """``call()``, again (up to ``RETRIES`` times) while it fails with the "too noisy" refusal,
    or, with ``any_failure`` (tests marked ``host_speed``: they compare two measurements made
    seconds apart, which a host whose speed swings can set apart), while it fails at all."""
    for attempt in range(RETRIES + 1):
        try:
            return call()
        except Exception as error:  # raised, or an assertion that quotes a CLI's refusal
            refusal = _refusal(str(error))
            if attempt == RETRIES and refusal is not None:
                import pytest

                pytest.skip(f"the host stayed too noisy over {RETRIES + 1} tries: {refusal}")
            if attempt == RETRIES or not (any_failure or refusal is not None):
                raise
            logger.warning("%s: the host was too noisy (%s); trying again", what, error)
            time.sleep(pause_s)
    raise AssertionError("unreachable")


def _refusal(message: str) -> str | None:
    """The line of ``message`` that holds the library's refusal, if one does."""
    return next(
        (line.strip() for line in message.splitlines() if any(n in line for n in NOISY)), None
    )
