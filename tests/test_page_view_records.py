"""collector.page_view_records gives exactly the record the pydantic models give, or leaves the item to them.

Each item goes through both paths: the fast one (``page_view_records.PageViews.record``) and the models' one
(``parse_events`` with the fast path switched off). Whenever the fast path takes an item, the models must accept
it too, with the same event id, topic, key and record bytes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from page_view_strategies import page_views

from collector import events as event_parsing
from collector import page_view_records
from schemas.events import PageView, absolute_http_url
from schemas.topics import Topics

TOPICS = Topics("fast")
RECEIVED = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=timezone.utc)
GENERATED_ID = "0123456789abcdef0123456789abcdef"
TRACKER_VIEW = {  # what tracker.js sends (collector/static/tracker.js)
    "type": "page_view",
    "event_id": "k2x9-1714566615250",
    "occurred_at": "2024-05-01T12:30:15.250Z",
    "sent_at": "2024-05-01T12:30:15.251Z",
    "visitor_id": "v-5f2a9c",
    "session_id": "s-81bd",
    "url": "https://acme.test/pricing?utm_source=linkedin&utm_medium=social&utm_campaign=spring",
    "path": "/pricing",
    "title": "Pricing - Acme",
    "referrer": "https://www.linkedin.com/",
    "screen": "1920x1080",
    "utm_source": "linkedin",
    "utm_medium": "social",
    "utm_campaign": "spring",
}


def both_paths(item: dict, user_agent: str | None = "Mozilla/5.0 (X11)"):
    """(the fast path's answer, the models' ParsedBatch) for one item."""
    fast = page_view_records.PageViews(
        site_id="site-1",
        received_at=RECEIVED,
        user_agent=user_agent,
        topic=TOPICS.events,
        new_event_id=lambda: GENERATED_ID,
    ).record(item)
    with (
        mock.patch.object(event_parsing.page_view_records.PageViews, "record", return_value=None),
        mock.patch.object(event_parsing._EventIds, "new", lambda self: GENERATED_ID),
    ):
        models = event_parsing.parse_events(
            [item],
            site_id="site-1",
            allowed_types=event_parsing.SERVER_TYPES,
            received_at=RECEIVED,
            user_agent=user_agent,
            topics=TOPICS,
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
        {
            "type": "page_view",
            "visitor_id": "bench-1",
            "url": "https://bench.test/p/1?utm_source=google&utm_medium=cpc",
        },
        {**TRACKER_VIEW, "title": "  Prix  ", "visitor_id": "\tv-1\n", "occurred_at": "2024-05-01T14:30:15+02:00"},
        {**TRACKER_VIEW, "occurred_at": "2024-05-01T12:30:15", "sent_at": None, "session_id": None, "title": ""},
        {**TRACKER_VIEW, "url": "http://acme.test", "path": None, "utm_source": None, "screen": None},
        {**TRACKER_VIEW, "url": "https://acme.test/?gclid=abc&utm_term=a+b&utm_content=%C3%A9t%C3%A9&utm_source="},
        {**TRACKER_VIEW, "user_agent": "curl/8"},
        {**TRACKER_VIEW, "user_agent": "   "},
        {**TRACKER_VIEW, "title": "Été à Paris ✓"},
        {**TRACKER_VIEW, "visitor_id": "v" * 128, "screen": "x" * 32, "referrer": "r" * 4096},
    ],
    ids=[
        "tracker",
        "bench",
        "stripped",
        "naive-time",
        "bare-url",
        "url-fields",
        "own-agent",
        "blank-agent",
        "unicode",
        "longest",
    ],
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
    # A field or validator added to PageView must be taught to collector/page_view_records.py (or this test changed).
    assert set(PageView.model_fields) - set(page_view_records.TEXT_FIELDS) == {
        "occurred_at",
        "type",
        "ads_consent",  # checked by the fast path itself (granted, denied or null)
        "do_not_track",  # a JSON boolean
    }
    assert page_view_records.REQUIRED_TEXT == ("visitor_id", "url")
    decorators = PageView.__pydantic_decorators__
    assert sorted(decorators.field_validators) + sorted(decorators.model_validators) == [
        "_absolute_url",
        "_occurred_at_utc",
        "_fill_from_url",
    ]
    assert page_view_records.TEXT_FIELDS["visitor_id"] == (1, 128, False)
    assert page_view_records.TEXT_FIELDS["screen"] == (0, 32, True)


# -- property: any item, both paths ----------------------------------------------------------------------------


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(page_views, st.sampled_from([None, "", "Mozilla/5.0", "  ua  ", "\x1cua", "u" * 600, "Mozilla/5.0"]))
def test_any_page_view_gets_the_models_record_or_is_left_to_them(item: dict, user_agent: str | None) -> None:
    fast, models = both_paths(item, user_agent)
    if fast is not None:
        assert_same_record(fast, models)


@pytest.mark.parametrize(
    "occurred_at",
    [
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2019-05-01T12:30:15Z",
        "2024-05-02T12:30:16Z",
        "2024-05-02T12:30:15.250Z",
        "2019-05-02T12:30:15.250Z",
    ],
)
def test_the_accepted_times_are_the_same_on_both_paths(occurred_at: str) -> None:
    # The default window around RECEIVED (2024-05-01T12:30:15.25Z): 1826 days back (2019-05-02T12:30:15.25Z) to
    # 24 hours ahead, both edges included. Outside it the fast path leaves the item, and the models reject it.
    item = {**TRACKER_VIEW, "occurred_at": occurred_at}
    fast, models = both_paths(item)
    inside = occurred_at.startswith(("2024-05-02T12:30:15.250", "2019-05-02T12:30:15.250"))
    if inside:
        assert fast is not None
        assert_same_record(fast, models)
    else:
        assert fast is None
        assert [error["loc"] for rejection in models.rejected for error in rejection["errors"]] == ["occurred_at"]


# -- property: whole batches that repeat URLs and visitors (the fast path's caches are warm) ---------------------


def batch_both_paths(items: list, user_agent: str | None):
    """(ParsedBatch with the fast path, ParsedBatch with the models only) of one batch; ids drawn in order."""

    def counted(self: event_parsing._EventIds) -> str:
        self.drawn = getattr(self, "drawn", 0) + 1
        return f"{self.drawn:032x}"

    def parse():
        return event_parsing.parse_events(
            items,
            site_id="site-1",
            allowed_types=event_parsing.SERVER_TYPES,
            received_at=RECEIVED,
            user_agent=user_agent,
            topics=TOPICS,
        )

    with mock.patch.object(event_parsing._EventIds, "new", counted):
        fast = parse()
        with mock.patch.object(event_parsing.page_view_records.PageViews, "record", return_value=None):
            models = parse()
    return fast, models


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(page_views, min_size=1, max_size=6),
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), page_views), max_size=10),
    st.sampled_from([None, "Mozilla/5.0", "\x1cua"]),
)
def test_a_batch_repeating_urls_and_visitors_gets_the_models_records(
    first: list[dict], repeats: list[tuple[int, int, dict]], user_agent: str | None
) -> None:
    # Later items reuse earlier items' URLs and visitors with other fields of their own: what the fast path keeps
    # per URL or visitor must not carry one item's fields into another's record.
    items = list(first)
    for url_from, visitor_from, other in repeats:
        items.append(
            {
                **other,
                "url": first[url_from % len(first)]["url"],
                "visitor_id": first[visitor_from % len(first)]["visitor_id"],
            }
        )
    fast, models = batch_both_paths(items, user_agent)
    assert fast.rejected == models.rejected
    assert fast.accepted == models.accepted


def test_a_batch_of_the_bench_s_page_views_twice_gives_the_same_records_twice() -> None:
    # The second pass takes every URL and visitor from the caches; the records must not change.
    items = [
        {
            "type": "page_view",
            "visitor_id": f"bench-{i % 64}",
            "url": f"https://bench.test/p/{i}?utm_source=google&utm_medium=cpc&utm_campaign=load",
            **({"utm_source": "newsletter", "path": "/own"} if i % 3 == 0 else {}),
        }
        for i in range(100)
    ]
    first, models = batch_both_paths(items, "wrk")
    again, _ = batch_both_paths(items, "wrk")
    assert len(first.accepted) == 100
    assert first.accepted == models.accepted == again.accepted
    view = orjson.loads(first.accepted[3].record.value)["event"]
    assert (view["utm_source"], view["utm_medium"], view["path"]) == ("newsletter", "cpc", "/own")
    view = orjson.loads(first.accepted[4].record.value)["event"]
    assert (view["utm_source"], view["utm_medium"], view["path"]) == ("google", "cpc", "/p/4")


URL_CHARACTERS = st.sampled_from(list("htps:/?#[]@%&=.aZ09+-_ \t\n\r\x00\x1f\x7fé\u3000\u2100"))
URL_STARTS = ["https://", "http://", "HTTPS://", "Http://", " https://", "\x00http://", "https:", "https:/", "http://["]


@settings(max_examples=3000, deadline=None)
@given(
    st.one_of(
        st.text(URL_CHARACTERS, max_size=40),
        st.builds(lambda start, rest: start + rest, st.sampled_from(URL_STARTS), st.text(URL_CHARACTERS, max_size=40)),
    )
)
def test_the_fast_url_split_is_the_models_url_rule(url: str) -> None:
    """``split_http_url`` gives ``absolute_http_url``'s parts, or raises its error, for any text."""

    def outcome(split):
        try:
            return split(url)
        except ValueError as error:
            return ("ValueError", str(error))

    assert outcome(page_view_records.split_http_url) == outcome(absolute_http_url)
