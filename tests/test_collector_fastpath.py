"""collector.fastpath gives exactly the record the pydantic models give, or leaves the item to them.

Each item goes through both paths: the fast one (``fastpath.PageViews.record``) and the models' one
(``parse_events`` with the fast path switched off). Whenever the fast path takes an item, the models must accept
it too, with the same event id, topic, key and record bytes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from collector import events as event_parsing
from collector import fastpath
from schemas.events import PageView
from schemas.topics import Topics

TOPICS = Topics("fast")
RECEIVED = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=timezone.utc)
GENERATED_ID = "0123456789abcdef0123456789abcdef"
TRACKER_VIEW = {  # what tracker.js sends (collector/static/tracker.js)
    "type": "page_view", "event_id": "k2x9-1714566615250", "occurred_at": "2024-05-01T12:30:15.250Z",
    "sent_at": "2024-05-01T12:30:15.251Z", "visitor_id": "v-5f2a9c", "session_id": "s-81bd",
    "url": "https://acme.test/pricing?utm_source=linkedin&utm_medium=social&utm_campaign=spring",
    "path": "/pricing", "title": "Pricing - Acme", "referrer": "https://www.linkedin.com/", "screen": "1920x1080",
    "utm_source": "linkedin", "utm_medium": "social", "utm_campaign": "spring",
}


def both_paths(item: dict, user_agent: str | None = "Mozilla/5.0 (X11)"):
    """(the fast path's answer, the models' ParsedBatch) for one item."""
    fast = fastpath.PageViews(
        site_id="site-1", received_at=RECEIVED, user_agent=user_agent, topic=TOPICS.events,
        new_event_id=lambda: GENERATED_ID,
    ).record(item)
    with mock.patch.object(event_parsing.fastpath.PageViews, "record", return_value=None), \
            mock.patch.object(event_parsing._EventIds, "new", lambda self: GENERATED_ID):
        models = event_parsing.parse_events(
            [item], site_id="site-1", allowed_types=event_parsing.SERVER_TYPES, received_at=RECEIVED,
            user_agent=user_agent, topics=TOPICS,
        )
    return fast, models


def assert_same_record(fast, models) -> None:
    assert models.rejected == [], "the fast path took an item the models reject"
    [accepted] = models.accepted
    assert fast[0] == accepted.event_id
    assert fast[1] == accepted.record, (orjson.loads(fast[1].value), orjson.loads(accepted.record.value))


@pytest.mark.parametrize(
    "item",
    [
        TRACKER_VIEW,
        {"type": "page_view", "visitor_id": "bench-1", "url": "https://bench.test/p/1?utm_source=google&utm_medium=cpc"},
        {**TRACKER_VIEW, "title": "  Prix  ", "visitor_id": "\tv-1\n", "occurred_at": "2024-05-01T14:30:15+02:00"},
        {**TRACKER_VIEW, "occurred_at": "2024-05-01T12:30:15", "sent_at": None, "session_id": None, "title": ""},
        {**TRACKER_VIEW, "url": "http://acme.test", "path": None, "utm_source": None, "screen": None},
        {**TRACKER_VIEW, "url": "https://acme.test/?gclid=abc&utm_term=a+b&utm_content=%C3%A9t%C3%A9&utm_source="},
        {**TRACKER_VIEW, "user_agent": "curl/8"},
        {**TRACKER_VIEW, "user_agent": "   "},
        {**TRACKER_VIEW, "title": "Été à Paris ✓"},
        {**TRACKER_VIEW, "visitor_id": "v" * 128, "screen": "x" * 32, "referrer": "r" * 4096},
    ],
    ids=["tracker", "bench", "stripped", "naive-time", "bare-url", "url-fields", "own-agent", "blank-agent",
         "unicode", "longest"],
)
def test_the_fast_path_takes_the_trackers_shapes_and_writes_what_the_models_write(item: dict) -> None:
    fast, models = both_paths(item)
    assert fast is not None, "the fast path left a common page view to the models"
    assert_same_record(fast, models)


@pytest.mark.parametrize(
    ("item", "accepted"),
    [
        ({**TRACKER_VIEW, "occurred_at": 1714566615}, True),  # epoch seconds: pydantic reads them
        ({**TRACKER_VIEW, "occurred_at": "2024-05-01 12:30:15Z"}, True),  # a space for the T
        ({**TRACKER_VIEW, "title": "\x1cPricing"}, True),  # str.strip removes U+001C, pydantic does not
        ({**TRACKER_VIEW, "title": "Pricing\u3000"}, True),  # an ideographic space: both strip it; left to pydantic
        ({**TRACKER_VIEW, "visitor_id": "undefined"}, False),
        ({**TRACKER_VIEW, "visitor_id": "  "}, False),
        ({**TRACKER_VIEW, "url": "/pricing"}, False),
        ({**TRACKER_VIEW, "url": "https://[acme.test/"}, False),  # urlsplit raises
        ({**TRACKER_VIEW, "colour": "red"}, False),
        ({**TRACKER_VIEW, "title": 7}, False),
        ({**TRACKER_VIEW, "title": "x" * 513}, False),
        ({**TRACKER_VIEW, "occurred_at": None}, False),
        ({**TRACKER_VIEW, "occurred_at": "2024-02-30T00:00:00Z"}, False),
        ({**TRACKER_VIEW, "occurred_at": "0001-01-01T00:00:00+01:00"}, False),
        ({**TRACKER_VIEW, "event_id": " "}, False),
        ({**TRACKER_VIEW, "url": None}, False),
    ],
)
def test_other_shapes_are_left_to_the_models(item: dict, accepted: bool) -> None:
    fast, models = both_paths(item)
    assert fast is None
    assert (len(models.accepted), len(models.rejected)) == ((1, 0) if accepted else (0, 1))


def test_the_fast_path_knows_every_page_view_field_and_validator() -> None:
    # A field or validator added to PageView must be taught to collector/fastpath.py (or this test changed).
    assert set(PageView.model_fields) - set(fastpath.TEXT_FIELDS) == {"occurred_at", "type"}
    assert fastpath.REQUIRED_TEXT == ("visitor_id", "url")
    decorators = PageView.__pydantic_decorators__
    assert sorted(decorators.field_validators) + sorted(decorators.model_validators) == [
        "_absolute_url", "_occurred_at_utc", "_fill_from_url"]
    assert fastpath.TEXT_FIELDS["visitor_id"] == (1, 128, False)
    assert fastpath.TEXT_FIELDS["screen"] == (0, 32, True)


# -- property: any item, both paths ----------------------------------------------------------------------------

EDGES = ["", " ", "\t", "\n", "\x0b", "\x1c", "\x1f", "\x85", "\xa0", "\u2003", "\u3000", "\u200b"]
LENGTHS = [0, 1, 31, 32, 33, 127, 128, 129, 511, 512, 513, 2047, 2048, 2049, 4095, 4096, 4097]
plain = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
    st.sampled_from(["vis-1", "Pricing", "  padded  ", "Été", "1920x1080", "/p"]),
)
odd = st.one_of(
    st.sampled_from(["", "null", " Undefined ", "0", "-1", "anon", "[object Object]"]),
    st.builds(lambda n, left, right: left + "x" * n + right, st.sampled_from(LENGTHS), st.sampled_from(EDGES),
              st.sampled_from(EDGES)),
    st.sampled_from([None, 0, 2, True, [], {}]),
)


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy, one_in: int) -> st.SearchStrategy:
    """``bad`` about once in ``one_in`` draws: most items stay valid, so both paths are compared on them."""
    return st.integers(1, one_in).flatmap(lambda draw: bad if draw == 1 else good)


values = mostly(plain, odd, 8)
QUERY_VALUES = ["google", "", "a+b", "%20x%20", "%C3%A9", "%zz", " ", "+", "x" * 600]
query = st.lists(
    st.tuples(st.sampled_from(["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "gclid",
                               "msclkid", "fbclid", "li_fat_id", "utm%5Fsource", "q", ""]),
              st.sampled_from(QUERY_VALUES)),
    max_size=4,
).map(lambda pairs: "&".join(f"{name}={value}" for name, value in pairs))
good_urls = st.builds(
    lambda scheme, host, path, q: f"{scheme}{host}{path}{'?' + q if q else ''}",
    st.sampled_from(["https://", "http://", "HTTPS://"]),
    st.sampled_from(["acme.test", "ACME.test:8080", "[::1]"]),
    st.sampled_from(["", "/", "/p", "/a%20b", "/é"]),
    query,
)
odd_urls = st.one_of(
    st.builds(lambda url, edge: edge + url + edge, good_urls, st.sampled_from([" ", "\x1c", "\u3000"])),
    st.sampled_from(["ftp://acme.test/", "acme.test/p", "https:///p", "mailto:a@b.c", "https://[bad/", "/p", ""]),
    odd,
)
urls = mostly(good_urls, odd_urls, 6)
good_times = st.one_of(
    st.sampled_from([
        "2024-05-01T12:00:00Z", "2024-05-01T12:00:00.1Z", "2024-05-01T12:00:00.123456Z", "2024-05-01T12:00:00",
        "2024-05-01T12:00:00+05:30", "2024-05-01T12:00:00-00:00", "2024-05-01T12:00:00+23:59",
    ]),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(timezone.utc))
    .map(lambda moment: moment.isoformat().replace("+00:00", "Z")),
)
odd_times = st.one_of(
    st.sampled_from([
        "2024-05-01T12:00:00.1234567Z", "2024-05-01T12:00:00+24:00", "2024-05-01T12:00:00z", "2024-05-01t12:00:00Z",
        "2024-05-01 12:00:00", "2024-05-01", "2024-02-30T00:00:00Z", "2024-05-01T24:00:00Z", "2024-05-01T12:00:60Z",
        " 2024-05-01T12:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0000-01-01T00:00:00Z",
        "1714564800", 1714564800,
    ]),
    odd,
)
times = mostly(good_times, odd_times, 4)
FIELDS = [name for name in PageView.model_fields if name not in ("type", "visitor_id", "url", "occurred_at")]
page_views = st.builds(
    lambda visitor, url, extra, timed: {"type": "page_view", "visitor_id": visitor, "url": url, **extra, **timed},
    mostly(st.sampled_from(["vis-1", "v-2", " v-3 "]), values, 4),
    urls,
    st.dictionaries(mostly(st.sampled_from(FIELDS + ["event_id"]), st.just("colour"), 20), values, max_size=5),
    st.dictionaries(st.sampled_from(["occurred_at", "sent_at"]), times, max_size=2),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(page_views, st.sampled_from([None, "", "Mozilla/5.0", "  ua  ", "\x1cua", "u" * 600, "Mozilla/5.0"]))
def test_any_page_view_gets_the_models_record_or_is_left_to_them(item: dict, user_agent: str | None) -> None:
    fast, models = both_paths(item, user_agent)
    if fast is not None:
        assert_same_record(fast, models)
