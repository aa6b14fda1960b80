"""Token-bucket pacing of gateway_sim.pacing."""

from __future__ import annotations

from gateway_sim.pacing import Pacer


class Ticks:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_tickle_allows_burst_then_one_per_second():
    ticks = Ticks()
    pacer = Pacer(ticks)
    results = [pacer.allow("127.0.0.1", "/v1/api/tickle", burst=2) for _ in range(3)]
    assert results == [True, True, False]
    ticks.now = 1.0
    assert pacer.allow("127.0.0.1", "/v1/api/tickle", burst=2) is True
    assert pacer.allow("127.0.0.1", "/v1/api/tickle", burst=2) is False


def test_validate_is_one_per_minute_and_per_address():
    ticks = Ticks()
    pacer = Pacer(ticks)
    assert pacer.allow("127.0.0.1", "/v1/api/sso/validate", burst=1) is True
    assert pacer.allow("127.0.0.1", "/v1/api/sso/validate", burst=1) is False
    assert pacer.allow("127.0.0.2", "/v1/api/sso/validate", burst=1) is True
    ticks.now = 60.0
    assert pacer.allow("127.0.0.1", "/v1/api/sso/validate", burst=1) is True


def test_global_limit_is_ten_per_second():
    ticks = Ticks()
    pacer = Pacer(ticks)
    allowed = [pacer.allow("127.0.0.1", "/v1/api/one/user", burst=1) for _ in range(12)]
    assert allowed.count(True) == 10


def test_refused_requests_use_no_tokens():
    ticks = Ticks()
    pacer = Pacer(ticks)
    for _ in range(10):
        pacer.allow("127.0.0.1", "/v1/api/one/user", burst=1)
    assert pacer.allow("127.0.0.1", "/v1/api/tickle", burst=1) is False
    ticks.now = 0.2
    assert pacer.allow("127.0.0.1", "/v1/api/tickle", burst=1) is True
