"""The suite's one allowance for a shared host: the "too noisy" refusal is tried again, then skipped."""

from __future__ import annotations

import pytest

from tests._noise import RETRIES, retry_noisy


def _calls(*outcomes):
    calls = []

    def call():
        calls.append(1)
        outcome = outcomes[min(len(calls), len(outcomes)) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return call, calls


def test_a_refusal_is_tried_again_and_then_skipped_with_its_line():
    call, calls = _calls(
        AssertionError("assert 2 == 0\nofa search: error: too noisy to measure x")
    )
    with pytest.raises(pytest.skip.Exception, match="ofa search: error: too noisy to measure x"):
        retry_noisy(call, "t", pause_s=0)
    assert len(calls) == RETRIES + 1
    moved = RuntimeError("the latency model no longer predicts cpu: run `ofa profile` again")
    call, calls = _calls(moved, 7)
    assert retry_noisy(call, "t", pause_s=0) == 7 and len(calls) == 2


def test_any_other_failure_is_reported_at_once():
    call, calls = _calls(AssertionError("assert 0.5 < 0.4"))
    with pytest.raises(AssertionError, match="0.5 < 0.4"):
        retry_noisy(call, "t", pause_s=0)
    assert len(calls) == 1
    # a host-speed test is tried again on any failure, but only a refusal ends in a skip
    call, calls = _calls(AssertionError("assert 1.3 < 1.2"))
    with pytest.raises(AssertionError, match="1.3 < 1.2"):
        retry_noisy(call, "t", pause_s=0, any_failure=True)
    assert len(calls) == RETRIES + 1
