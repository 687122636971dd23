"""The simulated company: who arrives through which channel, what they read, who fills a form, who buys.

Everything is a pure function of a seed: the same :class:`SimulationConfig` gives the same journeys, event ids,
visitor ids, emails, times and deal values, byte for byte. Each journey is drawn from its own random stream
(``seed|day|index``), so simulating days 0-29 in one run or in two runs of 15 days gives the same journeys.

How the model is built, so that the product must see exactly the touches recorded here:

- every session starts with a *landing* page view that carries explicit UTM parameters (and click ids), or a
  clear external referrer (a search engine, a social network, a partner site), or nothing at all (direct);
- the session's further page views follow within 20 s - 4 min of each other, each with the site's own page as
  referrer (internal: never a touch);
- two sessions of the same visitor are at least :data:`MIN_SESSION_GAP` apart (more than the 30-minute timeout),
  so each landing is one touch and nothing else is.

A journey is one person: a first visit through a channel, return visits through others, perhaps a form (then the
person is a lead with an email), perhaps a second device that identifies too, and CRM stage changes days later.
A journey's events span at most :data:`MAX_SPAN_DAYS` days after its start.
"""

from __future__ import annotations

import hashlib
import math
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from urllib.parse import urlencode, urlsplit

MAX_SPAN_DAYS = 80
MIN_SESSION_GAP = timedelta(hours=1)
DEFAULT_SITE_URL = "https://www.northwind-analytics.example"
CRMS = ("hubspot", "pipedrive", "generic", "csv")


@dataclass(frozen=True)
class Arrival:
    """One way of arriving through a channel: the landing URL's parameters or the referrer, and where it lands.

    ``source``/``medium``/``campaign`` are what the product should record for the touch.
    """

    channel: str
    source: str
    medium: str
    campaign: str = ""
    term: str = ""
    content: str = ""
    referrer: str | None = None  # external referrer URL, for arrivals without UTM parameters
    utm: bool = False
    click_id: str = ""  # gclid, msclkid, fbclid or li_fat_id
    landings: tuple[str, ...] = ("/",)
    weight: float = 1.0
    cost_per_visit: Decimal = Decimal("0")

    @property
    def paid(self) -> bool:
        return self.cost_per_visit > 0


@dataclass(frozen=True)
class ChannelProfile:
    """A channel's share of new visitors, how well they convert, what deals they bring, how they come back."""

    channel: str
    share: float  # of the day's new visitors
    lead_rate: float  # chance that a new visitor of this channel fills a form
    customer_rate: float  # chance that such a lead is won
    deal_mean: float  # mean deal value (lognormal)
    return_weight: float  # weight of this channel among return visits
    arrivals: tuple[Arrival, ...]
    daily_fixed_cost: Decimal = Decimal("0")  # e.g. the email tool's subscription, spread per day


BLOG = (
    "/blog/attribution-models-explained",
    "/blog/utm-parameters-guide",
    "/blog/closed-loop-marketing",
    "/blog/b2b-funnel-benchmarks",
    "/blog/marketing-roi-formula",
    "/blog/lead-scoring-101",
)
PAGES = ("/", "/features", "/pricing", "/customers", "/integrations", "/about", "/docs/getting-started") + BLOG
FORMS = {"demo-request": "/demo", "ebook-download": "/ebooks/attribution-playbook", "webinar-signup": "/webinars/q3"}
TITLES = {
    "/": "Northwind Analytics: marketing attribution for B2B",
    "/features": "Features",
    "/pricing": "Pricing",
    "/customers": "Customer stories",
    "/integrations": "Integrations",
    "/about": "About us",
    "/docs/getting-started": "Getting started",
    "/demo": "Book a demo",
    "/demo/thanks": "Thanks! We'll be in touch",
    "/ebooks/attribution-playbook": "The attribution playbook (free e-book)",
    "/webinars/q3": "Webinar: closing the loop",
}
FORM_PAGES = frozenset(FORMS.values())
NEXT_PAGES = {  # a visitor's next click, by where they are
    "blog": ("/pricing", "/features", "/", "/demo", "/ebooks/attribution-playbook") + BLOG[:3],
    "other": ("/pricing", "/features", "/customers", "/integrations", "/demo", "/about", "/docs/getting-started"),
}


def _a(channel: str, source: str, medium: str, campaign: str = "", **kwargs) -> Arrival:
    if "cost_per_visit" in kwargs:
        kwargs["cost_per_visit"] = Decimal(str(kwargs["cost_per_visit"]))
    return Arrival(channel, source, medium, campaign, **kwargs)


DEFAULT_CHANNELS: tuple[ChannelProfile, ...] = (
    ChannelProfile(
        "Organic Search",
        0.28,
        0.06,
        0.14,
        9000,
        0.20,
        (
            _a("Organic Search", "google", "organic", referrer="https://www.google.com/", landings=BLOG, weight=8),
            _a("Organic Search", "bing", "organic", referrer="https://www.bing.com/", landings=BLOG, weight=1.5),
            _a(
                "Organic Search", "duckduckgo", "organic", referrer="https://duckduckgo.com/", landings=BLOG, weight=0.5
            ),
        ),
    ),
    ChannelProfile(
        "Paid Search",
        0.17,
        0.09,
        0.16,
        11000,
        0.12,
        (
            _a(
                "Paid Search",
                "google",
                "cpc",
                "brand-search",
                term="northwind analytics",
                utm=True,
                click_id="gclid",
                landings=("/", "/pricing"),
                weight=3,
                cost_per_visit=1.80,
            ),
            _a(
                "Paid Search",
                "google",
                "cpc",
                "generic-attribution",
                term="marketing attribution software",
                utm=True,
                click_id="gclid",
                landings=("/lp/attribution", "/features"),
                weight=4,
                cost_per_visit=6.40,
            ),
            _a(
                "Paid Search",
                "bing",
                "cpc",
                "generic-attribution",
                term="attribution tool",
                utm=True,
                click_id="msclkid",
                landings=("/lp/attribution",),
                weight=1,
                cost_per_visit=4.10,
            ),
        ),
    ),
    ChannelProfile(
        "Paid Social",
        0.12,
        0.04,
        0.09,
        8000,
        0.10,
        (
            _a(
                "Paid Social",
                "linkedin",
                "cpc",
                "abm-decision-makers",
                content="carousel-a",
                utm=True,
                click_id="li_fat_id",
                landings=("/lp/attribution", "/ebooks/attribution-playbook"),
                weight=2,
                cost_per_visit=7.90,
            ),
            _a(
                "Paid Social",
                "facebook",
                "paid_social",
                "retargeting-site-visitors",
                content="video-15s",
                utm=True,
                click_id="fbclid",
                landings=("/pricing", "/customers"),
                weight=1,
                cost_per_visit=1.35,
            ),
        ),
    ),
    ChannelProfile(
        "Organic Social",
        0.08,
        0.025,
        0.08,
        7000,
        0.05,
        (
            _a("Organic Social", "linkedin", "social", "company-posts", utm=True, landings=BLOG, weight=2),
            _a("Organic Social", "linkedin", "referral", referrer="https://www.linkedin.com/", landings=BLOG, weight=1),
            _a(
                "Organic Social",
                "reddit",
                "referral",
                referrer="https://www.reddit.com/r/marketing/",
                landings=BLOG,
                weight=0.7,
            ),
            _a("Organic Social", "twitter", "referral", referrer="https://t.co/", landings=BLOG, weight=0.5),
        ),
    ),
    ChannelProfile(
        "Email",
        0.07,
        0.10,
        0.18,
        10000,
        0.18,
        (
            _a(
                "Email", "newsletter", "email", "monthly-digest", content="top-story", utm=True, landings=BLOG, weight=2
            ),
            _a(
                "Email",
                "hubspot",
                "email",
                "nurture-sequence",
                content="step-2",
                utm=True,
                landings=("/customers", "/pricing", "/webinars/q3"),
                weight=1.5,
            ),
        ),
        daily_fixed_cost=Decimal("45.00"),
    ),
    ChannelProfile(
        "Referral",
        0.08,
        0.07,
        0.17,
        14000,
        0.05,
        (
            _a(
                "Referral",
                "g2.com",
                "referral",
                referrer="https://www.g2.com/products/northwind-analytics/reviews",
                landings=("/", "/pricing"),
                weight=2,
            ),
            _a(
                "Referral",
                "capterra.com",
                "referral",
                referrer="https://www.capterra.com/attribution-software/",
                landings=("/",),
                weight=1,
            ),
            _a(
                "Referral",
                "martech-weekly.example",
                "referral",
                referrer="https://martech-weekly.example/issue-112",
                landings=BLOG,
                weight=1,
            ),
        ),
    ),
    ChannelProfile(
        "Direct",
        0.13,
        0.05,
        0.12,
        9500,
        0.28,
        (_a("Direct", "(direct)", "(none)", landings=("/", "/pricing", "/docs/getting-started"), weight=1),),
    ),
    ChannelProfile(
        "Display",
        0.07,
        0.015,
        0.05,
        6000,
        0.02,
        (
            _a(
                "Display",
                "gdn",
                "display",
                "awareness-banners",
                content="300x250",
                utm=True,
                landings=("/lp/attribution",),
                weight=2,
                cost_per_visit=0.95,
            ),
            _a(
                "Display",
                "criteo",
                "display",
                "retargeting-banners",
                content="728x90",
                utm=True,
                landings=("/pricing",),
                weight=1,
                cost_per_visit=1.60,
            ),
        ),
    ),
)

DESKTOP = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "1920x1080",
)
LAPTOP = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "1440x900",
)
PHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "390x844",
)
FIRST_NAMES = (
    "anna",
    "ben",
    "carla",
    "david",
    "elif",
    "farid",
    "grace",
    "hugo",
    "ines",
    "jonas",
    "kaori",
    "lena",
    "marco",
    "nadia",
    "oscar",
    "priya",
    "quentin",
    "rosa",
    "sven",
    "tara",
    "umar",
    "vera",
    "wen",
    "yusuf",
)
LAST_NAMES = (
    "adler",
    "bauer",
    "costa",
    "dubois",
    "eriksen",
    "fischer",
    "garcia",
    "haddad",
    "ito",
    "jensen",
    "kowalski",
    "larsen",
    "moreau",
    "novak",
    "okafor",
    "petrov",
    "rossi",
    "silva",
    "tanaka",
    "weber",
)
COMPANIES = (
    "brightwave",
    "cobaltworks",
    "deltaforge",
    "evergreen-labs",
    "fjordsoft",
    "granite-io",
    "helio-systems",
    "ironbark",
    "juniper-data",
    "kestrel-cloud",
    "lumen-retail",
    "meridian-hq",
    "nimbus-logistics",
    "orchard-health",
    "pinnacle-fin",
    "quartzline",
)


ADS_CONSENT_SHARES = (("granted", 80), ("denied", 10))  # of visitors, in percent; the rest never state it


def ads_consent_for(visitor_id: str) -> str | None:
    """The ad consent a visitor's banner recorded (docs/ADS.md): fixed per visitor id by its hash, so it leaves the
    seeded random stream (and every other figure of a run) as it was."""
    bucket = int(hashlib.sha256(visitor_id.encode()).hexdigest()[:8], 16) % 100
    for answer, share in ADS_CONSENT_SHARES:
        if bucket < share:
            return answer
        bucket -= share
    return None


@dataclass(frozen=True)
class PageVisit:
    """A page view the website's tracker sends."""

    event_id: str
    visitor_id: str
    session_id: str
    at: datetime
    url: str
    path: str
    title: str
    referrer: str | None
    user_agent: str
    screen: str


@dataclass(frozen=True)
class FormSubmit:
    """A form submitted on the website: the tracker's identify event."""

    event_id: str
    visitor_id: str
    at: datetime
    email: str
    form_id: str
    url: str
    fields: dict[str, str]


@dataclass(frozen=True)
class TouchTruth:
    """A touch as the product must record it: the landing page view of a session, classified."""

    touch_id: str
    visitor_id: str
    event_id: str
    at: datetime
    channel: str
    source: str
    medium: str
    campaign: str
    term: str
    content: str
    click_id: str
    referrer_host: str
    landing_path: str


@dataclass(frozen=True)
class StageChange:
    """A CRM status change of a lead, sent by the lead's CRM days after the form."""

    key: str  # stable per (journey, stage): becomes the webhook delivery id / event id
    stage: str  # a schemas.events.LifecycleStage value
    at: datetime
    crm: str  # hubspot, pipedrive, generic, csv
    deal_value: Decimal | None = None
    currency: str | None = None
    reason: str | None = None  # why sales lost or disqualified the lead, when the CRM's record carries it


# What sales write in a CRM's lost-reason field; picked from the change's key, so no random draw moves.
LOST_REASONS = ("price", "no budget", "timing", "went with a competitor", "no response")


@dataclass(frozen=True)
class Journey:
    """One person: visitor ids (one per device), touches, page views, forms and CRM stage changes."""

    journey_id: str
    start_day: int
    channel: str  # channel of the first visit
    visitor_ids: tuple[str, ...]
    touches: tuple[TouchTruth, ...]
    page_views: tuple[PageVisit, ...]
    forms: tuple[FormSubmit, ...]
    stages: tuple[StageChange, ...]
    email: str | None = None  # the address the person will submit (None: never fills a form)
    name: str = ""
    company: str = ""
    crm: str = ""
    crm_contact_id: str = ""
    crm_deal_id: str = ""

    @property
    def lead_at(self) -> datetime | None:
        """When the person became a lead: the first form submit."""
        return min((form.at for form in self.forms), default=None)

    def until(self, horizon: datetime) -> "Journey":
        """The journey as known at ``horizon``: only what happened before it."""
        return replace(
            self,
            touches=tuple(t for t in self.touches if t.at < horizon),
            page_views=tuple(p for p in self.page_views if p.at < horizon),
            forms=tuple(f for f in self.forms if f.at < horizon),
            stages=tuple(s for s in self.stages if s.at < horizon),
        )


@dataclass(frozen=True)
class SpendLine:
    """Money spent on one channel and campaign on one day."""

    day: date
    channel: str
    source: str
    medium: str
    campaign: str
    cost: Decimal
    currency: str


@dataclass(frozen=True)
class SimulationConfig:
    """What the simulated company looks like. ``epoch`` is day 0 (midnight UTC)."""

    seed: int = 42
    epoch: date = date(2025, 1, 6)
    visitors_per_day: int = 150
    site_url: str = DEFAULT_SITE_URL
    currency: str = "EUR"
    lead_rate_scale: float = 1.0  # multiplies every channel's lead rate (tests want more leads from fewer visitors)
    customer_rate_scale: float = 1.0  # multiplies every channel's customer rate
    sales_cycle_scale: float = 1.0  # multiplies the time between CRM stages
    channels: tuple[ChannelProfile, ...] = field(default=DEFAULT_CHANNELS, repr=False)

    def day_start(self, day: int) -> datetime:
        return datetime.combine(self.epoch, time(0), tzinfo=timezone.utc) + timedelta(days=day)

    @property
    def host(self) -> str:
        return urlsplit(self.site_url).hostname or ""


def touch_id_for(visitor_id: str, event_id: str) -> str:
    """The product's touch id rule (docs/ARCHITECTURE.md): sha1("visitor_id|event_id") hex, 20 characters."""
    return hashlib.sha1(f"{visitor_id}|{event_id}".encode()).hexdigest()[:20]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _ms(value: datetime) -> datetime:
    """Whole milliseconds: what JSON timestamps and DateTime64(3) columns keep exactly."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _weighted(rng: random.Random, items, weights):
    return rng.choices(items, weights=weights, k=1)[0]


class _JourneyBuilder:
    """Draws one journey from its own random stream."""

    def __init__(self, config: SimulationConfig, day: int, index: int) -> None:
        self.config = config
        self.day = day
        self.journey_id = f"j{day:04d}-{index:05d}"
        self.rng = random.Random(f"{config.seed}|{day}|{index}")
        self.profiles = {p.channel: p for p in config.channels}
        self.page_views: list[PageVisit] = []
        self.touches: list[TouchTruth] = []
        self.forms: list[FormSubmit] = []
        self.end = config.day_start(day) + timedelta(days=MAX_SPAN_DAYS)

    def _arrival(self, profile: ChannelProfile) -> Arrival:
        return _weighted(self.rng, profile.arrivals, [a.weight for a in profile.arrivals])

    def _return_arrival(self) -> Arrival:
        profiles = self.config.channels
        return self._arrival(_weighted(self.rng, profiles, [p.return_weight for p in profiles]))

    def _landing_url(self, arrival: Arrival, path: str) -> str:
        url = self.config.site_url + path
        if not arrival.utm:
            return url
        params = {"utm_source": arrival.source, "utm_medium": arrival.medium, "utm_campaign": arrival.campaign}
        if arrival.term:
            params["utm_term"] = arrival.term
        if arrival.content:
            params["utm_content"] = arrival.content
        if arrival.click_id:
            params[arrival.click_id] = f"{self.rng.getrandbits(80):020x}"
        return f"{url}?{urlencode(params)}"

    def session(
        self,
        visitor_id: str,
        device: tuple[str, str],
        start: datetime,
        arrival: Arrival,
        form: str | None,
        email: str | None,
    ) -> datetime:
        """Add one session (landing, a few pages, maybe a form); return the time of its last event."""
        rng = self.rng
        session_id = f"s{rng.getrandbits(48):012x}"
        at = _ms(start)
        path = rng.choice(arrival.landings)
        referrer = arrival.referrer
        url = self._landing_url(arrival, path)
        pages = [path]
        target = FORMS.get(form, "") if form else ""
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3, 4))):
            kind = "blog" if pages[-1].startswith("/blog") else "other"
            nxt = rng.choice(NEXT_PAGES[kind])
            if nxt in FORM_PAGES:
                nxt = "/pricing"  # only the people who fill a form visit its page (apart from landings)
            if nxt != pages[-1]:
                pages.append(nxt)
        if target and pages[-1] != target:
            pages.append(target)
        form_at_page = len(pages) - 1 if target else -1
        if target == "/demo":
            pages.append("/demo/thanks")
        first = True
        for index, page in enumerate(pages):
            if not first:
                at = _ms(at + timedelta(seconds=rng.uniform(20, 240)))
                referrer = url.split("?", 1)[0]  # the previous page of this site: internal, not a touch
                url = self.config.site_url + page
            event_id = _uuid(rng)
            self.page_views.append(
                PageVisit(
                    event_id,
                    visitor_id,
                    session_id,
                    at,
                    url,
                    page,
                    TITLES.get(page, page.rsplit("/", 1)[-1].replace("-", " ").title()),
                    referrer,
                    device[0],
                    device[1],
                )
            )
            if first:
                self.touches.append(
                    TouchTruth(
                        touch_id_for(visitor_id, event_id),
                        visitor_id,
                        event_id,
                        at,
                        arrival.channel,
                        arrival.source,
                        arrival.medium,
                        arrival.campaign,
                        arrival.term,
                        arrival.content,
                        arrival.click_id,
                        urlsplit(arrival.referrer).hostname or "" if arrival.referrer else "",
                        path,
                    )
                )
                first = False
            if index == form_at_page and form and email:
                at = _ms(at + timedelta(seconds=rng.uniform(25, 150)))
                self.forms.append(
                    FormSubmit(
                        _uuid(rng),
                        visitor_id,
                        at,
                        email,
                        form,
                        url,
                        {"company": "", "role": rng.choice(("marketing", "sales", "ops"))},
                    )
                )
        return at

    def session_times(self, first: datetime, count: int) -> list[datetime]:
        """Start times of ``count`` sessions: the first one, then gaps of hours to days."""
        times = [first]
        for _ in range(count - 1):
            gap = timedelta(hours=2.0 + self.rng.expovariate(1 / 40.0))  # sessions last < 30 min
            times.append(times[-1] + gap)
        return [t for t in times if t < first + timedelta(days=30)]

    def build(self) -> Journey:
        config, rng = self.config, self.rng
        profiles = config.channels
        profile = _weighted(rng, profiles, [p.share for p in profiles])
        is_lead = rng.random() < min(1.0, profile.lead_rate * config.lead_rate_scale)
        day_start = config.day_start(self.day)
        # Office hours are busier: a triangular distribution peaking in the early afternoon.
        first = day_start + timedelta(hours=rng.triangular(6.0, 23.5, 14.0), seconds=rng.uniform(0, 59))
        extra = rng.choice((0, 1, 1, 2, 2, 3, 4)) if is_lead else rng.choice((0, 0, 0, 0, 1, 1, 2))
        times = self.session_times(first, 1 + extra)
        device = rng.choice((DESKTOP, DESKTOP, LAPTOP, PHONE))
        visitor_a = f"v{rng.getrandbits(64):016x}"
        visitor_ids = [visitor_a]
        email = name = company = crm = contact_id = deal_id = ""
        form_session = rng.randrange(len(times)) if is_lead else -1
        if is_lead:
            first_name, last_name = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            company = rng.choice(COMPANIES)
            name = f"{first_name.title()} {last_name.title()}"
            email = f"{first_name}.{last_name}.{self.day:03d}{self.journey_id[-5:]}@{company}.example"
            crm = _weighted(rng, CRMS, (0.35, 0.25, 0.25, 0.15))
            contact_id = str(rng.randrange(10**8, 10**9))
            deal_id = str(rng.randrange(10**6, 10**7))
        form_id = _weighted(rng, list(FORMS), (0.6, 0.25, 0.15))
        for index, start in enumerate(times):
            arrival = self._arrival(profile) if index == 0 else self._return_arrival()
            on_form = index == form_session
            self.session(visitor_a, device, start, arrival, form_id if on_form else None, email or None)
        if is_lead and rng.random() < 0.2:
            # A second device: a phone seen between the first visit and a few days after the form.
            visitor_b = f"v{rng.getrandbits(64):016x}"
            visitor_ids.append(visitor_b)
            lead_at = self.forms[0].at
            b_first = lead_at + timedelta(hours=rng.uniform(-72, 72))
            b_first = max(b_first, first + timedelta(minutes=5))
            b_times = self.session_times(b_first, rng.choice((1, 2, 2, 3)))
            b_form = rng.randrange(len(b_times))
            for index, start in enumerate(b_times):
                arrival = self._return_arrival()
                on_form = index == b_form
                self.session(visitor_b, PHONE, start, arrival, "webinar-signup" if on_form else None, email)
        stages = self.crm_stages(profile, crm, deal_id) if is_lead else []
        return Journey(
            journey_id=self.journey_id,
            start_day=self.day,
            channel=profile.channel,
            visitor_ids=tuple(visitor_ids),
            touches=tuple(sorted(self.touches, key=lambda t: (t.at, t.touch_id))),
            page_views=tuple(sorted(self.page_views, key=lambda p: (p.at, p.event_id))),
            forms=tuple(sorted(self.forms, key=lambda f: f.at)),
            stages=tuple(stages),
            email=email or None,
            name=name,
            company=company,
            crm=crm,
            crm_contact_id=contact_id,
            crm_deal_id=deal_id,
        )

    def crm_stages(self, profile: ChannelProfile, crm: str, deal_id: str) -> list[StageChange]:
        """Sales' verdict: MQL, SQL, opportunity, then won (with a deal value) or lost, days after the form."""
        rng = self.rng
        lead_at = min(form.at for form in self.forms)
        won = rng.random() < min(1.0, profile.customer_rate * self.config.customer_rate_scale)
        if won:
            path = (
                ["sql", "opportunity", "customer"] if rng.random() < 0.1 else ["mql", "sql", "opportunity", "customer"]
            )
        else:
            path = _weighted(
                rng,
                (
                    [],
                    ["disqualified"],
                    ["mql"],
                    ["mql", "lost"],
                    ["mql", "sql", "lost"],
                    ["mql", "sql", "opportunity", "lost"],
                ),
                (0.30, 0.12, 0.22, 0.10, 0.14, 0.12),
            )
        if crm == "hubspot":
            # HubSpot's lifecycle stages have no "disqualified": sales close such leads as lost deals.
            path = ["lost" if stage == "disqualified" else stage for stage in path]
        gaps_h = {
            "lead": (0.005, 0.15),
            "mql": (1, 48),
            "sql": (12, 96),
            "opportunity": (12, 96),
            "customer": (24, 240),
            "lost": (24, 240),
            "disqualified": (4, 96),
        }
        at = lead_at
        changes = []
        if crm in ("hubspot", "pipedrive"):
            # The form creates the contact in the CRM minutes later; that record carries the email, so the
            # product learns which CRM contact id is which lead (later changes name only the contact id).
            path = ["lead", *path]
        for stage in path:
            low, high = gaps_h[stage]
            # CRM clocks tick in whole seconds (CSV rows, Pipedrive timestamps).
            scale = 1.0 if stage == "lead" else self.config.sales_cycle_scale
            at = (at + timedelta(hours=rng.uniform(low, high) * scale)).replace(microsecond=0) + timedelta(seconds=1)
            value = currency = None
            if stage == "customer":
                value = Decimal(f"{rng.lognormvariate(math.log(profile.deal_mean), 0.5):.2f}")
                currency = self.config.currency
            key = hashlib.sha1(f"{self.config.seed}|{self.journey_id}|{stage}".encode()).hexdigest()[:24]
            # Pipedrive keeps a lost reason on deals only: a lead lost before any deal gets a label, no reason.
            labelled = crm == "pipedrive" and "opportunity" not in path[: path.index(stage)]
            reason = None
            if stage in ("lost", "disqualified") and not labelled:
                reason = LOST_REASONS[int(key[:8], 16) % len(LOST_REASONS)]
            changes.append(StageChange(key, stage, at, crm, value, currency, reason))
        return [c for c in changes if c.at < self.end]


def daily_visitors(config: SimulationConfig, day: int) -> int:
    """New visitors on a day: fewer at weekends, a little noise."""
    rng = random.Random(f"{config.seed}|volume|{day}")
    weekday = config.day_start(day).weekday()
    factor = 0.55 if weekday >= 5 else 1.0
    return max(1, round(config.visitors_per_day * factor * rng.uniform(0.85, 1.15)))


@lru_cache(maxsize=4096)
def journeys_started_on(config: SimulationConfig, day: int) -> tuple[Journey, ...]:
    """Every journey whose first visit falls on ``day`` (0 = the epoch)."""
    return tuple(_JourneyBuilder(config, day, index).build() for index in range(daily_visitors(config, day)))


def journeys_between(config: SimulationConfig, first_day: int, end_day: int) -> list[Journey]:
    """Journeys started on days ``first_day`` (clamped at 0) up to ``end_day`` (exclusive)."""
    return [j for day in range(max(0, first_day), end_day) for j in journeys_started_on(config, day)]


def spend_lines(config: SimulationConfig, first_day: int, end_day: int) -> list[SpendLine]:
    """Daily spend per paid channel and campaign: the day's sessions through it times its cost per visit (with
    a little noise, like an auction), plus channels' fixed daily costs."""
    visits: dict[tuple[int, Arrival], int] = defaultdict(int)
    arrivals = {(a.channel, a.source, a.medium, a.campaign): a for p in config.channels for a in p.arrivals}
    for journey in journeys_between(config, first_day - MAX_SPAN_DAYS, end_day):
        for touch in journey.touches:
            arrival = arrivals.get((touch.channel, touch.source, touch.medium, touch.campaign))
            day = (touch.at.date() - config.epoch).days
            if arrival is not None and arrival.paid and first_day <= day < end_day:
                visits[(day, arrival)] += 1
    lines = []
    for day in range(max(0, first_day), end_day):
        rng = random.Random(f"{config.seed}|spend|{day}")
        current = config.epoch + timedelta(days=day)
        for profile in config.channels:
            for arrival in profile.arrivals:
                count = visits.get((day, arrival), 0)
                if arrival.paid and count:
                    cost = arrival.cost_per_visit * count * Decimal(str(round(rng.uniform(0.85, 1.15), 3)))
                    lines.append(
                        SpendLine(
                            current,
                            arrival.channel,
                            arrival.source,
                            arrival.medium,
                            arrival.campaign,
                            cost.quantize(Decimal("0.01")),
                            config.currency,
                        )
                    )
            if profile.daily_fixed_cost:
                lines.append(SpendLine(current, profile.channel, "", "", "", profile.daily_fixed_cost, config.currency))
    return lines


@dataclass(frozen=True)
class SimulatedDays:
    """What a run over days ``[first_day, end_day)`` sends: every event whose time falls in those days."""

    config: SimulationConfig
    first_day: int
    end_day: int

    @property
    def start(self) -> datetime:
        return self.config.day_start(self.first_day)

    @property
    def end(self) -> datetime:
        return self.config.day_start(self.end_day)

    def journeys(self) -> list[Journey]:
        """Journeys with at least one event in the run (including ones started up to MAX_SPAN_DAYS before)."""
        return journeys_between(self.config, self.first_day - MAX_SPAN_DAYS, self.end_day)

    def day_events(self, day: int) -> tuple[list[PageVisit | FormSubmit], list[tuple[Journey, StageChange]]]:
        """The website events and CRM changes of one day, in time order."""
        start, end = self.config.day_start(day), self.config.day_start(day + 1)
        web: list[PageVisit | FormSubmit] = []
        crm: list[tuple[Journey, StageChange]] = []
        for journey in journeys_between(self.config, day - MAX_SPAN_DAYS, day + 1):
            web.extend(p for p in journey.page_views if start <= p.at < end)
            web.extend(f for f in journey.forms if start <= f.at < end)
            crm.extend((journey, s) for s in journey.stages if start <= s.at < end)
        web.sort(key=lambda e: (e.at, e.event_id))
        crm.sort(key=lambda item: (item[1].at, item[1].key))
        return web, crm

    def spend(self) -> list[SpendLine]:
        return spend_lines(self.config, self.first_day, self.end_day)

    def known_journeys(self) -> list[Journey]:
        """Ground truth at the end of the run: every journey since day 0, cut at the run's end."""
        return [j.until(self.end) for j in journeys_between(self.config, 0, self.end_day)]
