"""Offline conversion files for Google Ads and Microsoft Advertising, and Google's adjustments file (docs/ADS.md).

Pure part: :func:`eligibility` says whether one stage conversion may go to a platform's file, and which click it
carries; :func:`upload_file` and :func:`adjustments_file` write the platforms' documented templates. I/O part:
:func:`read_candidates`, :func:`read_uploaded` read ClickHouse; :func:`record` writes the audit rows
(``ad_feedback``).

Rules (the same for every platform):

- consent: the conversion's newest version says ``ads_consent = 'granted'`` (no statement is no consent);
- a click of the platform: Google ``gclid`` (``gbraid`` / ``wbraid`` have no column in the file template: such
  conversions are counted as skipped, to be sent through the API), Microsoft ``msclkid``;
- the click window: the click at most 90 days before the conversion (the platforms refuse older clicks);
- not lost: a lead that reached ``lost`` or ``disqualified`` after the conversion is left out (and a conversion
  uploaded before that is retracted by the adjustments file);
- not retracted before: a conversion with a retraction in the audit trail is not uploaded again.

Adjustments (Google): for each conversion uploaded from a file before (``ad_feedback``, route ``file``, action
``upload``) and not retracted yet, ``RETRACT`` when its lead was lost or disqualified after it (adjustment time:
the loss) or its consent is no longer ``granted`` (adjustment time: now), else ``RESTATE`` when its value is not
the value last sent (adjustment time: now).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from clickhouse_connect.driver.client import Client

from schemas.events import as_utc
from schemas.outbox import AdFeedback
from sinks import rows

CLICK_WINDOW = timedelta(days=90)
FILE_PLATFORMS = ("google", "microsoft")
FILE_CLICKS = {"google": "gclid", "microsoft": "msclkid"}
# Click kinds a platform knows that its file template has no column for (counted, never written).
API_ONLY_CLICKS = {"google": ("gbraid", "wbraid"), "microsoft": ()}
EXPORT_STAGES = ("sql", "customer")
DEFAULT_TIMEZONE = "+0000"

# The documented upload templates: a parameters row, then the header row.
UPLOAD_COLUMNS = {
    "google": ("Google Click ID", "Conversion Name", "Conversion Time", "Conversion Value", "Conversion Currency"),
    "microsoft": (
        "Microsoft Click ID",
        "Conversion Name",
        "Conversion Time",
        "Conversion Value",
        "Conversion Currency",
    ),
}
ADJUSTMENT_COLUMNS = (
    "Google Click ID",
    "Conversion Name",
    "Conversion Time",
    "Adjustment Type",
    "Adjustment Time",
    "Adjusted Value",
    "Adjusted Value Currency",
)
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class AdExportError(ValueError):
    """The export cannot run with these options; the message says what to change."""


@dataclass(frozen=True)
class Candidate:
    """One stage conversion as ClickHouse holds its newest version, with the lead's first loss if any."""

    conversion_id: str
    lead_id: str
    stage: str
    occurred_at: datetime
    revenue: Decimal | None
    currency: str
    clicks: tuple[tuple[str, str, datetime], ...]  # (kind, id, click time)
    ads_consent: str
    lost_at: datetime | None = None

    def click(self, kind: str) -> tuple[str, datetime] | None:
        return next(((value, at) for k, value, at in self.clicks if k == kind), None)


@dataclass(frozen=True)
class Uploaded:
    """What the audit trail says was sent for a conversion from a file: the upload's click and the last value."""

    conversion_id: str
    conversion_name: str
    click_id: str
    converted_at: datetime
    value: Decimal | None
    currency: str
    retracted: bool


@dataclass(frozen=True)
class FileRow:
    """One row of a file, and its audit record."""

    cells: tuple[str, ...]
    feedback: AdFeedback


def eligibility(candidate: Candidate, platform: str, *, window: timedelta = CLICK_WINDOW) -> tuple[str, str]:
    """``(click id, "")`` when the conversion goes into the platform's file, else ``("", reason)``."""
    if candidate.ads_consent != "granted":
        return "", "no consent"
    if candidate.lost_at is not None and candidate.lost_at >= candidate.occurred_at:
        return "", "lost or disqualified since"
    click = candidate.click(FILE_CLICKS[platform])
    if click is None:
        if any(candidate.click(kind) for kind in API_ONLY_CLICKS[platform]):
            return "", "gbraid/wbraid only (no column in the file template)"
        return "", f"no {FILE_CLICKS[platform]}"
    value, clicked_at = click
    if candidate.occurred_at - clicked_at > window:
        return "", "click older than 90 days"
    return value, ""


def zone_of(name: str) -> timezone | ZoneInfo:
    """The time zone the file's times are written in: an IANA name (``Europe/Berlin``) or ``+hhmm``/``-hhmm``."""
    if len(name) == 5 and name[0] in "+-" and name[1:].isdigit():
        hours, minutes = int(name[1:3]), int(name[3:])
        if hours > 14 or minutes > 59:
            raise AdExportError(f"--timezone {name!r}: an offset is +hhmm or -hhmm, at most 14 hours")
        sign = 1 if name[0] == "+" else -1
        return timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise AdExportError(
            f"--timezone {name!r} is not a time zone: give an IANA name such as America/New_York, or +hhmm"
        ) from None


def _time(at: datetime, zone: timezone | ZoneInfo) -> str:
    return as_utc(at).astimezone(zone).strftime(TIME_FORMAT)


def _money(value: Decimal | None) -> str:
    return "" if value is None else format(value.quantize(Decimal("0.01")), "f")


def _write(parameters: str, header: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    out = io.StringIO()
    out.write(f"Parameters:TimeZone={parameters}\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(body)
    return out.getvalue()


def upload_rows(
    candidates: Iterable[Candidate],
    platform: str,
    conversion_name: str,
    zone: timezone | ZoneInfo,
    now: datetime,
    retracted: frozenset[str] = frozenset(),
) -> tuple[list[FileRow], dict[str, int]]:
    """The file rows of the eligible conversions (in time order) and the count of the others per reason."""
    made: list[FileRow] = []
    skipped: dict[str, int] = {}
    for candidate in sorted(candidates, key=lambda c: (c.occurred_at, c.conversion_id)):
        click_id, reason = eligibility(candidate, platform)
        if not reason and candidate.conversion_id in retracted:
            reason = "retracted before"
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        value = candidate.revenue
        currency = candidate.currency if value is not None else ""
        cells = (click_id, conversion_name, _time(candidate.occurred_at, zone), _money(value), currency)
        feedback = AdFeedback(
            feedback_id=f"{platform}:upload:{candidate.conversion_id}",
            conversion_id=candidate.conversion_id,
            lead_id=candidate.lead_id,
            stage=candidate.stage,
            platform=platform,
            route="file",
            action="upload",
            conversion_name=conversion_name,
            click_kind=FILE_CLICKS[platform],
            click_id=click_id,
            converted_at=candidate.occurred_at,
            value=value,
            currency=currency or None,
            status="exported",
            recorded_at=now,
        )
        made.append(FileRow(cells, feedback))
    return made, skipped


def adjustment_rows(
    uploaded: Iterable[Uploaded],
    current: dict[str, Candidate],
    zone: timezone | ZoneInfo,
    now: datetime,
) -> list[FileRow]:
    """Google's adjustments for conversions uploaded before: retractions and restatements (module docstring)."""
    made: list[FileRow] = []
    for sent in sorted(uploaded, key=lambda u: (u.converted_at, u.conversion_id)):
        candidate = current.get(sent.conversion_id)
        if sent.retracted or candidate is None:
            continue
        value: Decimal | None = None
        currency = ""
        if candidate.lost_at is not None and candidate.lost_at >= candidate.occurred_at:
            action, adjusted_at = "retract", candidate.lost_at
        elif candidate.ads_consent != "granted":
            action, adjusted_at = "retract", now
        elif candidate.revenue is not None and candidate.revenue != sent.value:
            action, adjusted_at = "restate", now
            value, currency = candidate.revenue, candidate.currency
        else:
            continue
        cells = (
            sent.click_id,
            sent.conversion_name,
            _time(sent.converted_at, zone),
            action.upper(),
            _time(adjusted_at, zone),
            _money(value),
            currency,
        )
        feedback = AdFeedback(
            feedback_id=f"google:{action}:{candidate.conversion_id}",
            conversion_id=candidate.conversion_id,
            lead_id=candidate.lead_id,
            stage=candidate.stage,
            platform="google",
            route="file",
            action=action,
            conversion_name=sent.conversion_name,
            click_kind="gclid",
            click_id=sent.click_id,
            converted_at=sent.converted_at,
            value=value,
            currency=currency or None,
            status="exported",
            recorded_at=now,
        )
        made.append(FileRow(cells, feedback))
    return made


def upload_file(platform: str, rows_: Sequence[FileRow], timezone_name: str) -> str:
    return _write(timezone_name, UPLOAD_COLUMNS[platform], (r.cells for r in rows_))


def adjustments_file(rows_: Sequence[FileRow], timezone_name: str) -> str:
    return _write(timezone_name, ADJUSTMENT_COLUMNS, (r.cells for r in rows_))


# -- ClickHouse ------------------------------------------------------------------------------------------------

_CANDIDATES_SQL = """
SELECT c.conversion_id, c.lead_id, c.stage, c.occurred_at, c.revenue, c.currency, c.clicks, c.ads_consent, l.lost_at
FROM (
    SELECT conversion_id, lead_id, stage, occurred_at, revenue, currency, clicks, ads_consent
    FROM conversions FINAL
    WHERE {where}
) AS c
LEFT JOIN (
    SELECT lead_id, min(occurred_at) AS lost_at
    FROM conversions FINAL
    WHERE stage IN ('lost', 'disqualified')
    GROUP BY lead_id
) AS l ON l.lead_id = c.lead_id
ORDER BY c.occurred_at, c.conversion_id
"""


def _candidates(client: Client, where: str, parameters: dict) -> list[Candidate]:
    result = client.query(_CANDIDATES_SQL.format(where=where), parameters=parameters, settings={"join_use_nulls": 1})
    return [
        Candidate(
            conversion_id=row[0],
            lead_id=row[1],
            stage=row[2],
            occurred_at=as_utc(row[3]),
            revenue=row[4],
            currency=row[5] or "",
            clicks=tuple(_click(click) for click in row[6]),
            ads_consent=row[7] or "",
            lost_at=as_utc(row[8]) if row[8] is not None else None,
        )
        for row in result.result_rows
    ]


def _click(click: dict | tuple) -> tuple[str, str, datetime]:
    """One element of ``conversions.clicks`` as (kind, id, click time): a named tuple may come back as a dict."""
    kind, value, at = click.values() if isinstance(click, dict) else click
    return kind, value, as_utc(at)


def read_candidates(client: Client, stages: Sequence[str], date_from: date, date_to: date) -> list[Candidate]:
    """The newest version of each conversion of ``stages`` whose time is in the period (UTC days, inclusive)."""
    return _candidates(
        client,
        "stage IN {stages:Array(String)} AND toDate(occurred_at) BETWEEN {from:Date} AND {to:Date}",
        {"stages": list(stages), **_period(date_from, date_to)},
    )


def _period(date_from: date, date_to: date) -> dict[str, date]:
    if date_to < date_from:
        raise AdExportError(f"--to {date_to} is before --from {date_from}")
    return {"from": date_from, "to": date_to}


def read_retracted(client: Client, platform: str) -> frozenset[str]:
    result = client.query(
        "SELECT DISTINCT conversion_id FROM ad_feedback FINAL WHERE platform = {platform:String} "
        "AND action = 'retract'",
        parameters={"platform": platform},
    )
    return frozenset(row[0] for row in result.result_rows)


def read_uploaded(client: Client, stage: str, date_from: date, date_to: date) -> tuple[list[Uploaded], dict]:
    """Google conversions uploaded from files in the period, and their current state (by conversion id)."""
    result = client.query(
        """
        SELECT conversion_id,
               argMaxIf(conversion_name, recorded_at, action = 'upload'),
               argMaxIf(click_id, recorded_at, action = 'upload'),
               argMaxIf(converted_at, recorded_at, action = 'upload'),
               argMaxIf(value, recorded_at, action IN ('upload', 'restate')),
               argMaxIf(currency, recorded_at, action IN ('upload', 'restate')),
               countIf(action = 'retract') > 0
        FROM ad_feedback FINAL
        WHERE platform = 'google' AND route = 'file' AND stage = {stage:String}
          AND toDate(converted_at) BETWEEN {from:Date} AND {to:Date}
        GROUP BY conversion_id
        HAVING countIf(action = 'upload') > 0
        """,
        parameters={"stage": stage, **_period(date_from, date_to)},
    )
    uploaded = [
        Uploaded(row[0], row[1], row[2], as_utc(row[3]), row[4], row[5] or "", bool(row[6]))
        for row in result.result_rows
    ]
    if not uploaded:
        return [], {}
    current = _candidates(client, "conversion_id IN {ids:Array(String)}", {"ids": [u.conversion_id for u in uploaded]})
    return uploaded, {c.conversion_id: c for c in current}


def record(client: Client, made: Sequence[FileRow]) -> None:
    """The audit rows of a file just written (``ad_feedback``; a re-export collapses onto the same rows)."""
    if made:
        rows.insert(client, "ad_feedback", [rows.ad_feedback_row(r.feedback) for r in made])


def ready_counts(client: Client, date_from: date, date_to: date) -> dict[str, int]:
    """Per platform, the SQL and customer conversions of the period that may go back to it now: the files' rules for
    Google and Microsoft, a consented conversion with the platform's click inside the window for Meta (fbc) and
    LinkedIn (li_fat_id). What the demo prints."""
    candidates = read_candidates(client, EXPORT_STAGES, date_from, date_to)
    counts = {platform: sum(1 for c in candidates if not eligibility(c, platform)[1]) for platform in FILE_PLATFORMS}
    for platform, kind in (("meta", "fbc"), ("linkedin", "li_fat_id")):
        counts[platform] = sum(1 for c in candidates if _api_ready(c, kind))
    return counts


def _api_ready(candidate: Candidate, kind: str) -> bool:
    click = candidate.click(kind)
    return (
        candidate.ads_consent == "granted"
        and click is not None
        and candidate.occurred_at - click[1] <= CLICK_WINDOW
        and not (candidate.lost_at is not None and candidate.lost_at >= candidate.occurred_at)
    )
