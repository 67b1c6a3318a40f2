"""The what-if comparison (streams.tools.whatif.compare): bands before and after, the accounts that change band
(the largest score change first) and each component's score spread. No broker: states built by the core."""
from __future__ import annotations

from streams.core import apply_events
from streams.tools.whatif import compare, percentiles
from tests.core.helpers import T0, attr_model, attrs


def test_percentiles_are_nearest_rank():
    assert percentiles([]) is None
    assert percentiles([5.0]) == (5.0, 5.0, 5.0)
    assert percentiles([float(v) for v in range(1, 101)]) == (10.0, 50.0, 90.0)


def test_the_accounts_that_change_band_come_largest_change_first_with_each_components_spread():
    current = attr_model({"rating": {"scoring": {"type": "max", "max": 10}}})
    candidate = attr_model({"rating": {"scoring": {"type": "max", "max": 20}}}, version="candidate")
    ratings = {"a": 10, "b": 8, "c": 9, "d": 2}  # scores 100, 80, 90, 20 -> 50, 40, 45, 10
    states = {acc: apply_events(None, acc, [attrs(acc, T0, rating=r)], current, T0 + 60).state
              for acc, r in ratings.items()}
    report = compare(states, current, candidate, T0 + 60)
    assert report.before == {"Healthy": 3, "Needs Attention": 1}
    assert report.after == {"At Risk": 3, "Needs Attention": 1}
    assert [(c.account_id, c.band_before, c.band_after, c.score_before, c.score_after) for c in report.changes] == [
        ("a", "Healthy", "At Risk", 100.0, 50.0), ("c", "Healthy", "At Risk", 90.0, 45.0),
        ("b", "Healthy", "At Risk", 80.0, 40.0)]
    assert report.moved == 3 and report.mean_before == 72.5 and report.mean_after == 36.25
    assert report.components == {"rating": ((20.0, 80.0, 100.0), (10.0, 40.0, 50.0))}


def test_an_account_scored_without_a_band_is_reported_as_such():
    current = attr_model({"a": {}, "b": {}})
    candidate = attr_model({"a": {}, "b": {}}, version="strict", min_coverage=0.75)
    state = apply_events(None, "x", [attrs("x", T0, a=90)], current, T0 + 60).state  # half the weight
    report = compare({"x": state}, current, candidate, T0 + 60)
    assert report.before == {"Healthy": 1} and report.after == {"insufficient_data": 1}
    (change,) = report.changes
    assert (change.band_before, change.band_after, change.score_before, change.score_after) == (
        "Healthy", "insufficient_data", 90.0, 90.0)
