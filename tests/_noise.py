"""The one failure a shared host may legitimately cause: the library's "too noisy" refusal.

The latency tests time tiny models (~1 ms calls), which a busy host (other virtual machines on
the same cores, invisible from inside) can spread beyond the measurement bounds. The library
then refuses, as it should, with "too noisy to measure ...". Such a test or fixture is run
again, at most twice, after a pause; every other failure is reported at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

NOISY = "too noisy to measure"
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
            if attempt == RETRIES or not (any_failure or NOISY in str(error)):
                raise
            logger.warning("%s: the host was too noisy (%s); trying again", what, error)
            time.sleep(pause_s)
    raise AssertionError("unreachable")
