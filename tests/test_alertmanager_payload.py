"""Alertmanager webhook entries: a malformed one is refused with a reason a person can act on."""

import pytest

from orderwatch.alerts.notice import from_alertmanager

GOOD = {"status": "firing", "labels": {"alertname": "X", "severity": "critical", "gw": "a"},
        "annotations": {"summary": "s"}, "startsAt": "2026-02-23T02:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "f"}


def test_a_well_formed_alert_becomes_a_notice():
    notice = from_alertmanager(GOOD)
    assert (notice.alert, notice.severity, dict(notice.labels)) == ("X", "critical", {"gw": "a"})
    assert notice.starts_at == 1771812000.0 and notice.ends_at is None
    assert notice.summary == "s" and notice.summary_zh == ""


def test_the_rules_chinese_summary_reaches_the_notice():
    """dashboards/prometheus/rules.yml gives every alert a summary_zh annotation."""
    notice = from_alertmanager({**GOOD, "annotations": {"summary": "s", "summary_zh": "中文"}})
    assert (notice.summary, notice.summary_zh) == ("s", "中文")


@pytest.mark.parametrize(("alert", "reason"), [
    (1, "each alert must be an object, got int"),
    ("x", "each alert must be an object, got str"),
    ({**GOOD, "labels": 5}, "alert labels must be an object, got int"),
    ({**GOOD, "annotations": [1]}, "alert annotations must be an object, got list"),
    ({**GOOD, "startsAt": "bogus"}, "alert startsAt 'bogus' is not an RFC 3339 time"),
    ({**GOOD, "startsAt": "2026-02-23T02:00:00"}, "is not an RFC 3339 time"),  # no offset
    ({**GOOD, "status": "resolved", "endsAt": 7}, "alert endsAt '7' is not an RFC 3339 time"),
    ({**GOOD, "status": "weird"}, "alert status must be firing or resolved"),
    ({**GOOD, "startsAt": None}, "alert has no startsAt"),
])
def test_a_malformed_alert_says_what_is_wrong(alert, reason):
    with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
        from_alertmanager(alert)
