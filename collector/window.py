"""The times the collector accepts: ``occurred_at`` within a window around its own clock.

An event from year 1 or 9999 (a client's broken clock, a typo in a CSV) is not data anyone can use: ClickHouse
stores such times clamped to the ends of its range, and the stream jobs would make a touch of it today. So the
collector answers 422 naming ``occurred_at`` and the window (the CSV import names the row's line and ``date``)
instead of passing it on. The window is read from the settings (``CLOSEDLOOP_ACCEPT_PAST_DAYS``,
``CLOSEDLOOP_ACCEPT_FUTURE_HOURS``; ``CLOSEDLOOP_IMPORT_ACCEPT_PAST_DAYS`` for CSV imports, which carry
history) and applied the same way by the models' path and the fast path (``collector.page_view_records``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class AcceptedTimes:
    """How far before and after the collector's clock an event's ``occurred_at`` may be."""

    past: timedelta
    future: timedelta

    def bounds(self, received_at: datetime) -> tuple[datetime, datetime]:
        """(earliest, latest) accepted ``occurred_at`` for an event received at ``received_at`` (UTC)."""
        return received_at - self.past, received_at + self.future

    def problem(
        self, occurred_at: datetime, received_at: datetime, *, setting: str = "CLOSEDLOOP_ACCEPT_PAST_DAYS"
    ) -> str | None:
        """None when ``occurred_at`` is in the window, else a message saying what the window is."""
        earliest, latest = self.bounds(received_at)
        if earliest <= occurred_at <= latest:
            return None
        return (
            f"{_iso(occurred_at)} is outside the accepted times, {_iso(earliest)} to {_iso(latest)} "
            f"({self.past.total_seconds() / 86400:g} days before to {self.future.total_seconds() / 3600:g} hours "
            f"after the collector's clock); send the time the event happened, or widen {setting} / "
            "CLOSEDLOOP_ACCEPT_FUTURE_HOURS"
        )


def _iso(moment: datetime) -> str:
    """``0001-01-01T00:00:00Z``: years padded to four digits (``strftime`` does not), to the second."""
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


DEFAULT_PAST_DAYS = 1826  # five years
DEFAULT_FUTURE_HOURS = 24  # a client clock a day fast, or a time zone written wrongly
DEFAULT_IMPORT_PAST_DAYS = 7305  # twenty years: a spend or CRM sheet carries history
DEFAULT = AcceptedTimes(timedelta(days=DEFAULT_PAST_DAYS), timedelta(hours=DEFAULT_FUTURE_HOURS))
DEFAULT_IMPORT = AcceptedTimes(timedelta(days=DEFAULT_IMPORT_PAST_DAYS), timedelta(hours=DEFAULT_FUTURE_HOURS))
