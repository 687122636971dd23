"""What a page shows, read from its URL (so a view can be shared): the period, the model, a channel, a campaign.

A bad value is a ``BadParameter`` that says what was wrong, where (the URL parameter) and how to fix it; the app
turns it into a readable 400 page.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from urllib.parse import urlencode

from schemas.outputs import DATA_DRIVEN_MODELS, AttributionModel

RULE_MODELS = tuple(m.value for m in AttributionModel)
MODELS = RULE_MODELS + tuple(DATA_DRIVEN_MODELS)
DEFAULT_MODEL = "linear"
DEFAULT_DAYS = 30
MAX_DAYS = 3 * 366  # the trend has a row per day: bound the work one URL can ask for
KNOWN = ("from", "to", "model", "channel", "campaign")


@dataclass(frozen=True)
class BadParameter(ValueError):
    """A URL parameter the dashboard cannot use."""

    what: str
    where: str
    how: str

    def __str__(self) -> str:
        return f"{self.what} (in {self.where}): {self.how}"


@dataclass(frozen=True)
class View:
    date_from: date
    date_to: date
    model: str = DEFAULT_MODEL
    channel: str = ""
    campaign: str = ""

    @property
    def days(self) -> int:
        return (self.date_to - self.date_from).days + 1

    def previous(self) -> View:
        """The period of the same length that ends the day before this one starts."""
        return replace(
            self, date_from=self.date_from - timedelta(days=self.days), date_to=self.date_from - timedelta(1)
        )

    @property
    def rule_model(self) -> str:
        """The model for the reports that take only rule-based models (funnel, quality, landing pages)."""
        return self.model if self.model in RULE_MODELS else "first_touch"

    def query(self, **changes: str) -> str:
        """This view's URL query, with ``changes`` (an empty value drops the parameter)."""
        values = {
            "from": self.date_from.isoformat(),
            "to": self.date_to.isoformat(),
            "model": self.model,
            "channel": self.channel,
            "campaign": self.campaign,
            **changes,
        }
        return urlencode({k: v for k, v in values.items() if v})


def _day(params, name: str, default: date) -> date:
    text = params.get(name, "").strip()
    if not text:
        return default
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise BadParameter(
            f"{text!r} is not a date",
            f"the URL parameter '{name}'",
            f"write the day as YYYY-MM-DD, e.g. {name}={default.isoformat()}",
        ) from None


def parse_view(params, today: date | None = None) -> View:
    """The view of a URL's query parameters (a mapping); defaults: the last 30 days (UTC), the linear model."""
    today = today or datetime.now(timezone.utc).date()
    date_to = _day(params, "to", today)
    date_from = _day(params, "from", date_to - timedelta(days=DEFAULT_DAYS - 1))
    if date_from > date_to:
        raise BadParameter(
            f"the period starts on {date_from} and ends before it, on {date_to}",
            "the URL parameters 'from' and 'to'",
            "give the first day as 'from' and the last day as 'to'",
        )
    if (date_to - date_from).days + 1 > MAX_DAYS:
        raise BadParameter(
            f"the period {date_from} .. {date_to} is longer than {MAX_DAYS} days",
            "the URL parameters 'from' and 'to'",
            f"choose at most {MAX_DAYS} days (use `closedloop report` for longer periods)",
        )
    model = params.get("model", "").strip() or DEFAULT_MODEL
    if model not in MODELS:
        raise BadParameter(
            f"unknown attribution model {model!r}",
            "the URL parameter 'model'",
            f"choose one of: {', '.join(MODELS)}",
        )
    channel, campaign = params.get("channel", "").strip(), params.get("campaign", "").strip()
    for name, value in (("channel", channel), ("campaign", campaign)):
        if len(value) > 200:
            raise BadParameter(
                f"the {name} is {len(value)} characters long", f"the URL parameter '{name}'", "shorten it"
            )
    return View(date_from, date_to, model, channel, campaign)
