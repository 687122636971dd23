"""Hypothesis strategies for page views as trackers and producers might send them, valid and not.

Shared by the fast-path tests of the collector (``tests/test_page_view_records.py``) and of the sink
(``tests/test_sink_rows.py``): each fast path must give what the models give, or leave the item to them.
"""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import strategies as st

from schemas.events import PageView

EDGES = ["", " ", "\t", "\n", "\x0b", "\x1c", "\x1f", "\x85", "\xa0", "\u2003", "\u3000", "\u200b"]
LENGTHS = [0, 1, 31, 32, 33, 127, 128, 129, 511, 512, 513, 2047, 2048, 2049, 4095, 4096, 4097]
plain = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
    st.sampled_from(["vis-1", "Pricing", "  padded  ", "Été", "1920x1080", "/p"]),
)
odd = st.one_of(
    st.sampled_from(["", "null", " Undefined ", "0", "-1", "anon", "[object Object]"]),
    st.builds(
        lambda n, left, right: left + "x" * n + right,
        st.sampled_from(LENGTHS),
        st.sampled_from(EDGES),
        st.sampled_from(EDGES),
    ),
    st.sampled_from([None, 0, 2, True, [], {}]),
)


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy, one_in: int) -> st.SearchStrategy:
    """``bad`` about once in ``one_in`` draws: most items stay valid, so both paths are compared on them."""
    # The bad branch on the highest draw: Hypothesis starts from (and shrinks towards) the lowest.
    return st.integers(1, one_in).flatmap(lambda draw: bad if draw == one_in else good)


values = mostly(plain, odd, 8)
QUERY_VALUES = ["google", "", "a+b", "%20x%20", "%C3%A9", "%zz", " ", "+", "x" * 600]
query = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "utm_source",
                "utm_medium",
                "utm_campaign",
                "utm_term",
                "utm_content",
                "gclid",
                "msclkid",
                "fbclid",
                "li_fat_id",
                "utm%5Fsource",
                "q",
                "",
            ]
        ),
        st.sampled_from(QUERY_VALUES),
    ),
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
    st.sampled_from(
        [
            "2024-05-01T12:00:00Z",
            "2024-05-01T12:00:00.1Z",
            "2024-05-01T12:00:00.123456Z",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00:00+05:30",
            "2024-05-01T12:00:00-00:00",
            "2024-05-01T12:00:00+23:59",
        ]
    ),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(timezone.utc)).map(
        lambda moment: moment.isoformat().replace("+00:00", "Z")
    ),
)
odd_times = st.one_of(
    st.sampled_from(
        [
            "2024-05-01T12:00:00.1234567Z",
            "2024-05-01T12:00:00+24:00",
            "2024-05-01T12:00:00z",
            "2024-05-01t12:00:00Z",
            "2024-05-01 12:00:00",
            "2024-05-01",
            "2024-02-30T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:00:60Z",
            " 2024-05-01T12:00:00Z",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "0000-01-01T00:00:00Z",
            "1714564800",
            1714564800,
        ]
    ),
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
