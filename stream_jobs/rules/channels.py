"""Which marketing channel a page view came from: the default channel group rules, plus the user's own.

``classify(page_view, rules)`` reads the UTM fields, the click ids, the referrer and the page's own host.

**Source and medium** are worked out first:

- UTM parameters win. ``source`` is the site name when ``utm_source`` is a listed site or host (``LinkedIn``,
  ``lnkd.in``, ``www.google.com`` -> ``linkedin``, ``linkedin``, ``google``), else ``utm_source`` lower-cased;
  ``medium`` is ``utm_medium`` lower-cased. A missing ``utm_source`` is taken from a click id's network, else from
  the referrer, else ``(not set)``; a missing ``utm_medium`` is ``cpc`` with a Google click id or ``msclkid``, else
  ``(not set)``. With no ``utm_source`` and no ``utm_medium`` (only a campaign, say) both come from the click id
  or referrer as below. ``campaign``, ``term`` and ``content`` are kept as sent (trimmed).
- No UTM parameters: ``gclid`` (and Google's iOS ``gbraid`` / ``wbraid``) means ``google / cpc`` and ``msclkid``
  ``bing / cpc`` (paid search, the networks' auto-tagging). ``fbclid`` and ``li_fat_id`` are *not* paid by
  themselves: Facebook adds ``fbclid`` to organic links as well, and LinkedIn's ``li_fat_id`` marks a member, not
  an ad click. They give ``facebook / social`` or ``linkedin / social`` unless the referrer is a listed site (the
  apps often strip or mask the referrer).
- Else the referrer decides: a search engine gives ``<engine> / organic``, a social network ``<network> / social``,
  a webmail site ``<provider> / email``, a video or shopping site ``<site> / referral``, any other external host
  ``<host without www.> / referral``. No referrer: ``(direct) / (none)``.
- The site's own hosts are internal: a page view whose referrer is internal and that has no campaign parameters
  (no UTM field, no click id) is a click inside the site and gives ``None``, not a touch. Internal means: the
  same host, or the same registrable domain (``blog.example.com`` and ``www.example.com`` are internal to each
  other, ``example.co.uk`` counts as one domain; customers of shared hosts such as ``*.github.io`` are not), or a
  host listed in ``internal_hosts`` or a subdomain of one (for a site spread over several domains).

**The channel** is then the first user rule that matches (``stream_jobs.rules.channel_rules_file``), else the
first default rule, in this order (Google Analytics 4's default channel group; every comparison is
case-insensitive; PAID means the medium matches ``^(.*cp.*|ppc|retargeting|paid.*)$``; "search source" etc.
means the source is on that site list):

Direct, Cross-network, Paid Shopping, Paid Search, Paid Social, Paid Video, Display, Paid Other, Organic Shopping,
Organic Social, Organic Video, Organic Search, Referral, Email, Affiliates, Audio, SMS, Mobile Push Notifications,
Unassigned (see :func:`default_channel` for each rule).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from schemas.events import CLICK_ID_FIELDS, PageView
from stream_jobs.rules.channel_rules_file import ChannelConfig, UserRule, load_config, parse_config
from stream_jobs.rules.sitelists import SiteCategory, SiteLists, normalize_host, registrable_domain

DIRECT_SOURCE = "(direct)"
NONE_MEDIUM = "(none)"
NOT_SET = "(not set)"

PAID_MEDIUM = re.compile(r"^(.*cp.*|ppc|retargeting|paid.*)$", re.IGNORECASE)
SHOP_CAMPAIGN = re.compile(r"^(.*(([^a-df-z]|^)shop|shopping).*)$", re.IGNORECASE)
VIDEO_MEDIUM = re.compile(r"^(.*video.*)$", re.IGNORECASE)
DISPLAY_MEDIUMS = frozenset({"display", "banner", "expandable", "interstitial", "cpm"})
SOCIAL_MEDIUMS = frozenset({"social", "social-network", "social-media", "sm", "social network", "social media"})
REFERRAL_MEDIUMS = frozenset({"referral", "app", "link"})
EMAIL_VALUES = frozenset({"email", "e-mail", "e_mail", "e mail"})

_SIGNATURE_CLICKS = ("gclid", "msclkid", "fbclid", "li_fat_id")
_LATER_CLICKS = tuple(name for name in CLICK_ID_FIELDS if name not in _SIGNATURE_CLICKS)  # gbraid, wbraid

# Click ids set by ad networks' auto-tagging: the click is a paid search click of that network.
PAID_CLICK_IDS = {"gclid": "google", "gbraid": "google", "wbraid": "google", "msclkid": "bing"}
# Click ids that say which network the visitor came from, but not that the click was paid.
SOCIAL_CLICK_IDS = {"fbclid": "facebook", "li_fat_id": "linkedin"}

# Medium given to a visit from a listed site when no UTM parameters are present.
_REFERRER_MEDIUM = {
    SiteCategory.SEARCH: "organic",
    SiteCategory.SOCIAL: "social",
    SiteCategory.EMAIL: "email",
    SiteCategory.VIDEO: "referral",
    SiteCategory.SHOPPING: "referral",
}


@dataclass(frozen=True)
class Classification:
    """Where one visit came from."""

    channel: str
    source: str
    medium: str
    campaign: str = ""
    term: str = ""
    content: str = ""
    click_id: str = ""  # which click id was present: gclid, gbraid, wbraid, msclkid, fbclid or li_fat_id
    referrer_host: str = ""

    @property
    def is_direct(self) -> bool:
        return self.channel == "Direct"


@dataclass(frozen=True)
class ChannelRules:
    """Site lists, the site's own hosts and the user's rules: everything :func:`classify` needs to know."""

    sites: SiteLists = field(default_factory=SiteLists)
    internal_hosts: frozenset[str] = frozenset()
    user_rules: tuple[UserRule, ...] = ()

    @classmethod
    def from_config(cls, config: ChannelConfig | Mapping[str, Any] | Sequence[Any] | None) -> "ChannelRules":
        """Rules from a parsed :class:`ChannelConfig` or the raw JSON shape (see the channel rules file module)."""
        if config is None:
            return cls()
        if not isinstance(config, ChannelConfig):
            config = parse_config(config)
        return cls(SiteLists().with_additions(config.sites), config.internal_hosts, config.rules)

    @classmethod
    def from_file(cls, path: Path | str | None) -> "ChannelRules":
        """Rules from a JSON/TOML file (``WorkerSettings.channel_rules_file``); ``None`` gives the defaults."""
        return cls() if path is None else cls.from_config(load_config(Path(path)))

    def is_internal(self, referrer_host: str, page_host: str) -> bool:
        """True when a referrer is the site itself (same registrable domain, or a listed internal host)."""
        referrer_host, page_host = normalize_host(referrer_host), normalize_host(page_host)
        if not referrer_host:
            return False
        if referrer_host == page_host or registrable_domain(referrer_host) == registrable_domain(page_host):
            return True
        return any(referrer_host == host or referrer_host.endswith("." + host) for host in self.internal_hosts)


def _clean(value: str | None) -> str:
    return value.strip() if value else ""


def referrer_host(page_view: PageView) -> str:
    """The referrer's host name, lower-cased; empty when there is none or it is not a URL."""
    if not page_view.referrer:
        return ""
    try:
        return normalize_host(urlsplit(page_view.referrer.strip()).hostname or "")
    except ValueError:  # e.g. an invalid IPv6 literal
        return ""


def campaign_signature(page_view: PageView) -> str:
    """The campaign parameters of a page view as one string; empty when it carries none.

    Two page views with the same non-empty signature came from the same campaign link (UTM fields compared
    case-insensitively, click id values exactly: a new ad click is a new click id).
    """
    utm = [
        _clean(getattr(page_view, f"utm_{name}")).lower()
        for name in ("source", "medium", "campaign", "term", "content")
    ]
    clicks = [_clean(getattr(page_view, name)) for name in _SIGNATURE_CLICKS]
    # Google's iOS ids came later: appended only when present, so the signatures kept in the visitors table by an
    # older worker still match their campaign's next page view (a changed format would start a touch).
    later = [_clean(getattr(page_view, name)) for name in _LATER_CLICKS]
    if any(later):
        clicks += later
    if not any(utm) and not any(clicks):
        return ""
    return "|".join(utm + clicks)


def classify(page_view: PageView, rules: ChannelRules) -> Classification | None:
    """The channel, source and medium of a visit; ``None`` for a click inside the site (internal referrer)."""
    utm_source = _clean(page_view.utm_source)
    utm_medium = _clean(page_view.utm_medium)
    campaign, term, content = _clean(page_view.utm_campaign), _clean(page_view.utm_term), _clean(page_view.utm_content)
    click_id = next((name for name in CLICK_ID_FIELDS if _clean(getattr(page_view, name))), "")
    ref_host = referrer_host(page_view)
    internal = rules.is_internal(ref_host, page_view.host)
    has_utm = bool(utm_source or utm_medium or campaign or term or content)
    if internal and not has_utm and not click_id:
        return None

    fallback_source, fallback_medium = _untagged_source_medium(click_id, "" if internal else ref_host, rules.sites)
    if utm_source or utm_medium:
        source = _source_name(utm_source, rules.sites) if utm_source else fallback_source
        if not utm_source and source == DIRECT_SOURCE:  # a tagged link without a source is not a direct visit
            source = NOT_SET
        if utm_medium:
            medium = utm_medium.lower()
        else:
            medium = "cpc" if click_id in PAID_CLICK_IDS else NOT_SET
    elif has_utm and fallback_source == DIRECT_SOURCE:
        source, medium = NOT_SET, NOT_SET  # only campaign/term/content: tagged, so not direct, but no source
    else:
        source, medium = fallback_source, fallback_medium

    fields = {
        "source": source,
        "medium": medium,
        "campaign": campaign,
        "term": term,
        "content": content,
        "click_id": click_id,
        "referrer_host": ref_host,
    }
    channel = next((rule.channel for rule in rules.user_rules if rule.matches(fields)), None)
    if channel is None:
        channel = default_channel(source, medium, campaign, rules.sites)
    return Classification(channel, source, medium, campaign, term, content, click_id, ref_host)


def _source_name(value: str, sites: SiteLists) -> str:
    hit = sites.match(value)
    return hit.name if hit is not None else value.lower()


def _untagged_source_medium(click_id: str, external_host: str, sites: SiteLists) -> tuple[str, str]:
    """Source and medium of a visit without UTM parameters: click id, then referrer, then direct."""
    if click_id in PAID_CLICK_IDS:
        return PAID_CLICK_IDS[click_id], "cpc"
    if external_host:
        hit = sites.match(external_host)
        if hit is not None:
            return hit.name, _REFERRER_MEDIUM[hit.category]
        if click_id not in SOCIAL_CLICK_IDS:  # an unknown host in front of fbclid is an in-app browser, say
            return external_host.removeprefix("www."), "referral"
    if click_id in SOCIAL_CLICK_IDS:
        return SOCIAL_CLICK_IDS[click_id], "social"
    return DIRECT_SOURCE, NONE_MEDIUM


def default_channel(source: str, medium: str, campaign: str, sites: SiteLists) -> str:
    """The default channel group (GA4's rules, in their order) of a source/medium/campaign."""
    source, medium, campaign = source.lower(), medium.lower(), campaign.lower()
    if source == DIRECT_SOURCE and medium in (NOT_SET, NONE_MEDIUM):
        return "Direct"
    if "cross-network" in campaign:
        return "Cross-network"
    site = sites.match(source)
    category = site.category if site is not None else None
    paid = bool(PAID_MEDIUM.match(medium))
    shopping = category == SiteCategory.SHOPPING or bool(SHOP_CAMPAIGN.match(campaign))
    if paid:
        if shopping:
            return "Paid Shopping"
        if category == SiteCategory.SEARCH:
            return "Paid Search"
        if category == SiteCategory.SOCIAL:
            return "Paid Social"
        if category == SiteCategory.VIDEO:
            return "Paid Video"
    if medium in DISPLAY_MEDIUMS:
        return "Display"
    if paid:
        return "Paid Other"
    if shopping:
        return "Organic Shopping"
    if category == SiteCategory.SOCIAL or medium in SOCIAL_MEDIUMS:
        return "Organic Social"
    if category == SiteCategory.VIDEO or VIDEO_MEDIUM.match(medium):
        return "Organic Video"
    if category == SiteCategory.SEARCH or medium == "organic":
        return "Organic Search"
    if medium in REFERRAL_MEDIUMS:
        return "Referral"
    if source in EMAIL_VALUES or medium in EMAIL_VALUES:
        return "Email"
    if medium == "affiliate":
        return "Affiliates"
    if medium == "audio":
        return "Audio"
    if source == "sms" or medium == "sms":
        return "SMS"
    if medium.endswith("push") or "mobile" in medium or "notification" in medium or source == "firebase":
        return "Mobile Push Notifications"
    return "Unassigned"
