"""Lead scoring: points per rule from a lead's activity and profile, with a breakdown.

Pure rules (no Faust, no I/O); the rules file is read by :func:`load_scoring_rules` (JSON, or TOML when the name
ends in ``.toml``)::

    {
      "threshold": 50,
      "half_life_days": 14,
      "window_days": 90,
      "pages": [{"path": "/pricing", "points": 10}, {"path": "/case-studies/*", "points": 5}],
      "visit_points": 2, "page_view_points": 0.5,
      "forms": {"demo": 40, "contact": 30, "newsletter": 5},
      "company_email_points": 10, "free_mail_points": -10,
      "free_mail_domains": ["gmail.com"],
      "crm_fields": [{"field": "company_size", "value": ["51-200", "201-1000"], "points": 15}],
      "stages": {"marketingqualifiedlead": 10, "salesqualifiedlead": 20}
    }

Behaviour points (pages, visits, page views, forms) decay: a point earned ``age`` days before the scoring time is
worth ``2 ** (-age / half_life_days)``, so an old burst fades; activity older than ``window_days`` counts nothing.
Fit points (email domain, CRM fields, stage) do not decay: they describe the lead, not what it did.
Every key is optional; :data:`DEFAULT_RULES` documents the defaults.
"""

from __future__ import annotations

import fnmatch
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

DEFAULT_FREE_MAIL = frozenset(
    {
        "gmail.com", "googlemail.com", "yahoo.com", "hotmail.com", "outlook.com", "live.com", "msn.com",
        "aol.com", "icloud.com", "me.com", "mail.com", "gmx.de", "gmx.net", "web.de", "proton.me",
        "protonmail.com", "yandex.ru", "mail.ru", "qq.com", "163.com",
    }
)  # fmt: skip

_KEYS = frozenset(
    {
        "threshold", "half_life_days", "window_days", "pages", "visit_points", "page_view_points", "forms",
        "company_email_points", "free_mail_points", "free_mail_domains", "crm_fields", "stages",
    }
)  # fmt: skip


@dataclass(frozen=True)
class PageRule:
    """Points for a page view whose path matches ``pattern`` (``*`` matches within the path)."""

    pattern: str
    points: float

    def matches(self, path: str) -> bool:
        return fnmatch.fnmatchcase(path.rstrip("/") or "/", self.pattern.rstrip("/") or "/")


@dataclass(frozen=True)
class FieldRule:
    """Points when a CRM field equals one of ``values`` (case-insensitive)."""

    field: str
    values: frozenset[str]
    points: float


@dataclass(frozen=True)
class ScoringRules:
    """A validated scoring rules file."""

    threshold: float = 50.0
    half_life_days: float = 14.0
    window_days: float = 90.0
    pages: tuple[PageRule, ...] = (
        PageRule("/pricing", 10.0),
        PageRule("/demo", 15.0),
        PageRule("/case-studies/*", 5.0),
        PageRule("/careers*", -5.0),
    )
    visit_points: float = 2.0
    page_view_points: float = 0.5
    forms: Mapping[str, float] = field(default_factory=lambda: {"demo": 40.0, "contact": 30.0, "newsletter": 5.0})
    company_email_points: float = 10.0
    free_mail_points: float = -10.0
    free_mail_domains: frozenset[str] = DEFAULT_FREE_MAIL
    crm_fields: tuple[FieldRule, ...] = ()
    stages: Mapping[str, float] = field(
        default_factory=lambda: {"marketingqualifiedlead": 10.0, "salesqualifiedlead": 20.0, "opportunity": 20.0}
    )


DEFAULT_RULES = ScoringRules()

# The pipeline's stage names (schemas.events.LifecycleStage) beside HubSpot's lifecycle names, which the rules file
# may use for the same stage: a rule for either applies.
STAGE_ALIASES = {
    "mql": "marketingqualifiedlead",
    "sql": "salesqualifiedlead",
    "marketingqualifiedlead": "mql",
    "salesqualifiedlead": "sql",
}


def form_kind(form_id: str, rules: ScoringRules) -> str:
    """The form kind of a form id: the id itself when the rules name it, else the first kind the id starts with
    (the tracker's ``data-closedloop="demo-request"`` is a ``demo`` form), else the id, lower-cased."""
    name = form_id.strip().lower()
    if name in rules.forms:
        return name
    for kind in sorted(rules.forms, key=len, reverse=True):
        if name.startswith(kind):
            return kind
    return name


@dataclass(frozen=True)
class Activity:
    """One thing a lead did: a page view (``path``), a visit start (``visit``) or a form (``form_kind``)."""

    at: datetime
    path: str = ""
    visit: bool = False
    form_kind: str = ""


@dataclass(frozen=True)
class Score:
    """A score and the points each rule gave, as ``(rule, points)`` in a stable order."""

    total: float
    breakdown: tuple[tuple[str, float], ...]


def decay(age_days: float, rules: ScoringRules) -> float:
    """Weight of a point ``age_days`` old: halves every half-life, 0 past the window; a future point counts fully."""
    if age_days > rules.window_days:
        return 0.0
    return float(2.0 ** (-max(age_days, 0.0) / rules.half_life_days))


def score_lead(
    rules: ScoringRules,
    now: datetime,
    activities: Sequence[Activity],
    email: str = "",
    crm: Mapping[str, str] | None = None,
    stage: str = "",
) -> Score:
    """Score a lead at ``now``; points are rounded to 2 decimals per rule so replays give equal breakdowns."""
    points: dict[str, float] = {}

    def add(rule: str, value: float) -> None:
        if value:
            points[rule] = points.get(rule, 0.0) + value

    for activity in sorted(activities, key=lambda activity: activity.at):  # arrival order must not matter
        weight = decay((now - activity.at).total_seconds() / 86400.0, rules)
        if not weight:
            continue
        if activity.visit:
            add("engagement:visits", rules.visit_points * weight)
        if activity.path:
            add("engagement:page_views", rules.page_view_points * weight)
            for page in rules.pages:
                if page.matches(activity.path):
                    add(f"page:{page.pattern}", page.points * weight)
                    break
        if activity.form_kind:
            add(f"form:{activity.form_kind}", rules.forms.get(activity.form_kind.lower(), 0.0) * weight)
    domain = email.rpartition("@")[2].strip().lower()
    if domain:
        if domain in rules.free_mail_domains:
            add("fit:free_mail", rules.free_mail_points)
        else:
            add("fit:company_email", rules.company_email_points)
    for rule in rules.crm_fields:
        if (crm or {}).get(rule.field, "").strip().lower() in rule.values:
            add(f"crm:{rule.field}", rule.points)
    if stage:
        name = stage.lower()
        add(f"stage:{name}", rules.stages.get(name, rules.stages.get(STAGE_ALIASES.get(name, name), 0.0)))
    breakdown = tuple((rule, round(value, 2)) for rule, value in points.items() if round(value, 2))
    return Score(round(sum(value for _, value in breakdown), 2), breakdown)


def _number(raw: Mapping[str, object], key: str, where: str, default: float, positive: bool = False) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or (positive and value <= 0):
        kind = "a positive number" if positive else "a number"
        raise ValueError(f'{where}: "{key}" must be {kind}, not {value!r}; e.g. "{key}": {default:g}')
    return float(value)


def parse_scoring_rules(raw: object, where: str = "scoring rules") -> ScoringRules:
    """Validate a decoded scoring rules file; ValueError names the rule and the fix."""
    if not isinstance(raw, Mapping):
        raise ValueError(f'{where} must be an object, e.g. {{"threshold": 50, "pages": [...]}}')
    unknown = set(raw) - _KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(_KEYS)}")
    d = DEFAULT_RULES
    pages_raw = raw.get("pages", None)
    pages = d.pages
    if pages_raw is not None:
        if not isinstance(pages_raw, list):
            raise ValueError(f'{where}: "pages" must be a list like [{{"path": "/pricing", "points": 10}}]')
        parsed: list[PageRule] = []
        for i, page in enumerate(pages_raw):
            at = f"{where}: pages[{i}]"
            if not isinstance(page, Mapping) or not isinstance(page.get("path"), str):
                raise ValueError(f'{at} needs a "path" string starting with "/", e.g. {{"path": "/pricing"}}')
            path = str(page["path"])
            if not path.startswith("/"):
                raise ValueError(f'{at}: path {path!r} must start with "/", e.g. "/{path}"')
            parsed.append(PageRule(path, _number(page, "points", at, 10.0)))
        pages = tuple(parsed)
    forms_raw = raw.get("forms", None)
    forms = d.forms
    if forms_raw is not None:
        if not isinstance(forms_raw, Mapping):
            raise ValueError(f'{where}: "forms" must map a form kind to points, e.g. {{"demo": 40}}')
        forms = {str(k).lower(): _number(forms_raw, k, f"{where}: forms", 0.0) for k in forms_raw}
    stages_raw = raw.get("stages", None)
    stages = d.stages
    if stages_raw is not None:
        if not isinstance(stages_raw, Mapping):
            raise ValueError(f'{where}: "stages" must map a CRM stage to points, e.g. {{"salesqualifiedlead": 20}}')
        stages = {str(k).lower(): _number(stages_raw, k, f"{where}: stages", 0.0) for k in stages_raw}
    free = raw.get("free_mail_domains", None)
    if free is not None and (not isinstance(free, list) or not all(isinstance(x, str) and x for x in free)):
        raise ValueError(f'{where}: "free_mail_domains" must be a list of domains, e.g. ["gmail.com"]')
    fields_raw = raw.get("crm_fields", [])
    if not isinstance(fields_raw, list):
        raise ValueError(f'{where}: "crm_fields" must be a list of {{"field", "value", "points"}} objects')
    crm_fields: list[FieldRule] = []
    for i, rule in enumerate(fields_raw):
        at = f"{where}: crm_fields[{i}]"
        if not isinstance(rule, Mapping) or not isinstance(rule.get("field"), str):
            raise ValueError(f'{at} needs a "field" name, e.g. {{"field": "country", "value": "DE", "points": 5}}')
        values = rule.get("value")
        values = [values] if isinstance(values, str) else values
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise ValueError(f'{at}: "value" must be a string or a non-empty list of strings')
        crm_fields.append(
            FieldRule(str(rule["field"]), frozenset(v.strip().lower() for v in values), _number(rule, "points", at, 5))
        )
    return ScoringRules(
        threshold=_number(raw, "threshold", where, d.threshold, positive=True),
        half_life_days=_number(raw, "half_life_days", where, d.half_life_days, positive=True),
        window_days=_number(raw, "window_days", where, d.window_days, positive=True),
        pages=pages,
        visit_points=_number(raw, "visit_points", where, d.visit_points),
        page_view_points=_number(raw, "page_view_points", where, d.page_view_points),
        forms=forms,
        company_email_points=_number(raw, "company_email_points", where, d.company_email_points),
        free_mail_points=_number(raw, "free_mail_points", where, d.free_mail_points),
        free_mail_domains=d.free_mail_domains if free is None else frozenset(x.strip().lower() for x in free),
        crm_fields=tuple(crm_fields),
        stages=stages,
    )


def load_scoring_rules(path: Path) -> ScoringRules:
    """Read and validate a scoring rules file; errors name the file, the rule at fault and the fix."""
    path = Path(path)
    toml = path.suffix.lower() == ".toml"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"cannot read scoring rules file {path}: {error.strerror or error}") from None
    try:
        raw = tomllib.loads(text) if toml else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"{path} is not valid {'TOML' if toml else 'JSON'}: {error}") from None
    return parse_scoring_rules(raw, where=str(path))
