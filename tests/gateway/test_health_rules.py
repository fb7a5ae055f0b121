"""When the gateway warns about the workers it depends on (gateway.health.HealthRules)."""

from __future__ import annotations

from gateway.health import HealthRules, Sample


def events(rules: HealthRules, live: dict[str, int], lag: dict[str, int]) -> list[str]:
    return [f"{n.event}:{next(iter(n.fields.values()))}" for n in rules.observe(Sample(live, lag))]


def test_a_role_without_live_workers_is_warned_about_once_until_it_is_back() -> None:
    rules = HealthRules()
    assert events(rules, {"conversation": 0, "llm": 1}, {}) == ["role_unserved:conversation"]
    assert events(rules, {"conversation": 0, "llm": 1}, {}) == []
    assert events(rules, {"conversation": 2, "llm": 1}, {}) == ["role_served:conversation"]
    assert events(rules, {"conversation": 2, "llm": 1}, {}) == []


def test_lag_that_keeps_growing_is_warned_about_once() -> None:
    rules = HealthRules(growing_samples=3)
    seen = [events(rules, {}, {"llm": lag}) for lag in (0, 1, 2, 5, 9, 12)]
    assert seen == [[], [], [], ["group_lag_growing:llm"], [], []]
    assert events(rules, {}, {"llm": 12}) == ["group_lag_settled:llm"]


def test_steady_or_falling_lag_is_no_warning() -> None:
    rules = HealthRules(growing_samples=3)
    seen = [events(rules, {}, {"conversation": lag}) for lag in (40, 41, 40, 41, 42, 30, 31)]
    assert seen == [[]] * 7
