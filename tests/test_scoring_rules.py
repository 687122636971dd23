"""Lead scoring rules: exact points per rule, half-life decay at exact times, and refused rules files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stream_jobs.rules.scoring import (
    DEFAULT_RULES,
    Activity,
    load_scoring_rules,
    score_lead,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_points_per_rule_are_exact_and_kept_in_the_breakdown() -> None:
    activities = [
        Activity(NOW, visit=True, path="/"),
        Activity(NOW, path="/pricing"),
        Activity(NOW, path="/case-studies/acme"),
        Activity(NOW, form_kind="demo"),
    ]
    score = score_lead(DEFAULT_RULES, NOW, activities, email="ann@acme.io", stage="marketingqualifiedlead")
    assert dict(score.breakdown) == {
        "engagement:visits": 2.0,
        "engagement:page_views": 1.5,
        "page:/pricing": 10.0,
        "page:/case-studies/*": 5.0,
        "form:demo": 40.0,
        "fit:company_email": 10.0,
        "stage:marketingqualifiedlead": 10.0,
    }
    assert score.total == 78.5


def test_free_mail_gives_negative_points_and_newsletter_less_than_demo() -> None:
    score = score_lead(DEFAULT_RULES, NOW, [Activity(NOW, form_kind="newsletter")], email="bob@Gmail.com")
    assert dict(score.breakdown) == {"form:newsletter": 5.0, "fit:free_mail": -10.0}
    assert score.total == -5.0


def test_half_life_halves_behaviour_points_and_window_drops_them() -> None:
    one = score_lead(DEFAULT_RULES, NOW, [Activity(NOW - timedelta(days=14), path="/pricing")])
    assert dict(one.breakdown) == {"engagement:page_views": 0.25, "page:/pricing": 5.0}
    two = score_lead(DEFAULT_RULES, NOW, [Activity(NOW - timedelta(days=28), path="/pricing")])
    assert dict(two.breakdown) == {"engagement:page_views": 0.12, "page:/pricing": 2.5}
    old = score_lead(DEFAULT_RULES, NOW, [Activity(NOW - timedelta(days=91), path="/pricing")])
    assert old.breakdown == () and old.total == 0.0


def test_crm_fields_and_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "scoring.toml"
    path.write_text(
        'threshold = 30\npages = [{path = "/demo", points = 20}]\n'
        'crm_fields = [{field = "country", value = ["DE", "AT"], points = 7}]\n'
    )
    rules = load_scoring_rules(path)
    assert rules.threshold == 30.0
    score = score_lead(rules, NOW, [Activity(NOW, path="/demo/")], crm={"country": "de"})
    assert dict(score.breakdown) == {"engagement:page_views": 0.5, "page:/demo": 20.0, "crm:country": 7.0}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"threshold": -1}', 'scoring.json: "threshold" must be a positive number, not -1; e.g. "threshold": 50'),
        ('{"pages": [{"path": "pricing", "points": 5}]}', "pages[0]: path 'pricing' must start with \"/\""),
        ('{"pages": [{"path": "/x", "points": "many"}]}', 'pages[0]: "points" must be a number'),
        ('{"forms": {"demo": "lots"}}', 'forms: "demo" must be a number'),
        ('{"crm_fields": [{"field": "country", "points": 5}]}', 'crm_fields[0]: "value" must be a string'),
        ('{"treshold": 5}', "unknown key(s) ['treshold']"),
        ("{not json", "scoring.json is not valid JSON"),
    ],
)
def test_bad_rules_file_is_refused_with_file_rule_and_fix(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "scoring.json"
    path.write_text(content)
    with pytest.raises(ValueError) as error:
        load_scoring_rules(path)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_default_rules_round_trip_through_json(tmp_path: Path) -> None:
    path = tmp_path / "scoring.json"
    path.write_text(json.dumps({"forms": {"Demo": 50}}))
    assert load_scoring_rules(path).forms == {"demo": 50.0}
