"""Which sites are search engines, social networks, video, shopping and email sites, and what to call them.

Written for this project from public knowledge (no third-party data file is copied). Each list maps a *source
name* (what reports show: ``google``, ``linkedin``) to the host patterns and the bare ``utm_source`` spellings that
mean that site.

Host patterns:

- ``facebook.com`` matches that host and every subdomain of it (``l.facebook.com``, ``m.facebook.com``);
- ``google.*`` matches the brand under any public suffix and any subdomain (``www.google.de``,
  ``google.co.uk``, ``news.google.com.au``);
- the most specific pattern wins: ``mail.google.com`` is the email site ``gmail``, ``www.google.com`` the search
  engine ``google``.

Bare names (no dot) are matched exactly against a ``utm_source`` such as ``fb`` or ``ig``. Every comparison is
case-insensitive. Users add their own entries through :meth:`SiteLists.with_additions` (see
``stream_jobs.rules.channel_rules_file``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class SiteCategory(StrEnum):
    SEARCH = "search"
    SOCIAL = "social"
    VIDEO = "video"
    SHOPPING = "shopping"
    EMAIL = "email"


SEARCH_ENGINES: Mapping[str, frozenset[str]] = {
    "google": frozenset({"google.*", "google", "googlesearch"}),
    "bing": frozenset({"bing.com", "bing", "cn.bing.com"}),
    "yahoo": frozenset({"yahoo.*", "search.yahoo.com", "yahoo"}),
    "duckduckgo": frozenset({"duckduckgo.com", "ddg.gg", "duckduckgo", "ddg"}),
    "baidu": frozenset({"baidu.com", "baidu"}),
    "yandex": frozenset({"yandex.*", "ya.ru", "yandex"}),
    "ecosia": frozenset({"ecosia.org", "ecosia"}),
    "qwant": frozenset({"qwant.com", "qwant"}),
    "startpage": frozenset({"startpage.com", "startpage"}),
    "brave": frozenset({"search.brave.com", "brave"}),
    "naver": frozenset({"naver.com", "naver"}),
    "daum": frozenset({"daum.net", "daum"}),
    "seznam": frozenset({"seznam.cz", "search.seznam.cz", "seznam"}),
    "sogou": frozenset({"sogou.com", "sogou"}),
    "so.com": frozenset({"so.com", "360.cn"}),
    "aol": frozenset({"search.aol.com", "aol"}),
    "ask": frozenset({"ask.com", "ask"}),
    "kagi": frozenset({"kagi.com", "kagi"}),
    "perplexity": frozenset({"perplexity.ai", "perplexity"}),
    "you.com": frozenset({"you.com"}),
    "mojeek": frozenset({"mojeek.com", "mojeek"}),
    "lycos": frozenset({"lycos.com", "lycos"}),
    "dogpile": frozenset({"dogpile.com", "dogpile"}),
    "metager": frozenset({"metager.org", "metager.de", "metager"}),
}

SOCIAL_NETWORKS: Mapping[str, frozenset[str]] = {
    "facebook": frozenset({"facebook.com", "fb.com", "fb.me", "facebook", "fb", "meta"}),
    "instagram": frozenset({"instagram.com", "instagram", "ig"}),
    "linkedin": frozenset({"linkedin.com", "lnkd.in", "linkedin", "li"}),
    "twitter": frozenset({"twitter.com", "x.com", "t.co", "twitter", "tw", "x"}),
    "pinterest": frozenset({"pinterest.*", "pin.it", "pinterest"}),
    "reddit": frozenset({"reddit.com", "redd.it", "reddit"}),
    "tiktok": frozenset({"tiktok.com", "tiktok"}),
    "snapchat": frozenset({"snapchat.com", "snapchat"}),
    "xing": frozenset({"xing.com", "xing"}),
    "tumblr": frozenset({"tumblr.com", "tumblr"}),
    "quora": frozenset({"quora.com", "quora"}),
    "mastodon": frozenset({"mastodon.social", "mastodon.online", "fosstodon.org", "mastodon"}),
    "bluesky": frozenset({"bsky.app", "bsky.social", "bluesky"}),
    "threads": frozenset({"threads.net", "threads"}),
    "vk": frozenset({"vk.com", "vk"}),
    "weibo": frozenset({"weibo.com", "weibo"}),
    "whatsapp": frozenset({"whatsapp.com", "wa.me", "whatsapp"}),
    "telegram": frozenset({"telegram.org", "t.me", "telegram"}),
    "discord": frozenset({"discord.com", "discord.gg", "discord"}),
    "slack": frozenset({"slack.com", "slack"}),
    "hackernews": frozenset({"news.ycombinator.com", "hn"}),
    "medium": frozenset({"medium.com"}),
    "producthunt": frozenset({"producthunt.com", "producthunt"}),
    "stackoverflow": frozenset({"stackoverflow.com", "stackexchange.com", "stackoverflow"}),
    "line": frozenset({"line.me"}),
    "messenger": frozenset({"messenger.com", "messenger"}),
}

VIDEO_SITES: Mapping[str, frozenset[str]] = {
    "youtube": frozenset({"youtube.com", "youtu.be", "youtube-nocookie.com", "youtube", "yt"}),
    "vimeo": frozenset({"vimeo.com", "vimeo"}),
    "twitch": frozenset({"twitch.tv", "twitch"}),
    "dailymotion": frozenset({"dailymotion.com", "dai.ly", "dailymotion"}),
    "wistia": frozenset({"wistia.com", "wistia.net", "wistia"}),
    "bilibili": frozenset({"bilibili.com", "bilibili"}),
    "netflix": frozenset({"netflix.com", "netflix"}),
    "rumble": frozenset({"rumble.com", "rumble"}),
}

SHOPPING_SITES: Mapping[str, frozenset[str]] = {
    "amazon": frozenset({"amazon.*", "amzn.to", "amazon"}),
    "ebay": frozenset({"ebay.*", "ebay"}),
    "etsy": frozenset({"etsy.com", "etsy"}),
    "walmart": frozenset({"walmart.com", "walmart"}),
    "aliexpress": frozenset({"aliexpress.com", "aliexpress"}),
    "alibaba": frozenset({"alibaba.com", "alibaba"}),
    "shopify": frozenset({"shop.app", "shopify"}),
    "googleshopping": frozenset({"shopping.google.com", "google_shopping", "google-shopping"}),
    "idealo": frozenset({"idealo.*", "idealo"}),
    "otto": frozenset({"otto.de", "otto"}),
    "zalando": frozenset({"zalando.*", "zalando"}),
    "rakuten": frozenset({"rakuten.*", "rakuten"}),
    "mercadolibre": frozenset({"mercadolibre.*", "mercadolivre.com.br", "mercadolibre"}),
    "target": frozenset({"target.com"}),
    "bestbuy": frozenset({"bestbuy.com"}),
    "temu": frozenset({"temu.com", "temu"}),
    "shein": frozenset({"shein.com", "shein"}),
}

EMAIL_SITES: Mapping[str, frozenset[str]] = {
    "gmail": frozenset({"mail.google.com", "gmail.com", "gmail"}),
    "outlook": frozenset(
        {"outlook.live.com", "outlook.office.com", "outlook.office365.com", "outlook.com", "outlook", "hotmail"}
    ),
    "yahoomail": frozenset({"mail.yahoo.com", "mail.yahoo.co.jp"}),
    "protonmail": frozenset({"mail.proton.me", "proton.me", "protonmail.com"}),
    "icloud": frozenset({"icloud.com"}),
    "gmx": frozenset({"gmx.net", "gmx.de", "gmx.com"}),
    "webde": frozenset({"web.de"}),
    "tonline": frozenset({"email.t-online.de"}),
    "aolmail": frozenset({"mail.aol.com"}),
    "yandexmail": frozenset({"mail.yandex.ru", "mail.yandex.com"}),
    "zohomail": frozenset({"mail.zoho.com", "mail.zoho.eu"}),
    "fastmail": frozenset({"fastmail.com"}),
    "mailchimp": frozenset({"mailchi.mp", "list-manage.com"}),
}

DEFAULT_SITES: Mapping[SiteCategory, Mapping[str, frozenset[str]]] = {
    SiteCategory.SEARCH: SEARCH_ENGINES,
    SiteCategory.SOCIAL: SOCIAL_NETWORKS,
    SiteCategory.VIDEO: VIDEO_SITES,
    SiteCategory.SHOPPING: SHOPPING_SITES,
    SiteCategory.EMAIL: EMAIL_SITES,
}

# Second-level labels under which a country code TLD sells names (example.co.uk, example.com.au): the label before
# them is the registrable one. An approximation of the public suffix list, good enough to tell sites apart.
_SECOND_LEVEL_LABELS = frozenset(
    {
        "co",
        "com",
        "net",
        "org",
        "gov",
        "edu",
        "ac",
        "ne",
        "or",
        "go",
        "gob",
        "nic",
        "ltd",
        "plc",
        "mil",
        "nom",
        "biz",
        "info",
    }
)
# Hosting platforms where every customer has a subdomain: two customers are two sites.
_SHARED_HOSTING_SUFFIXES = frozenset(
    {
        "github.io",
        "gitlab.io",
        "herokuapp.com",
        "netlify.app",
        "vercel.app",
        "pages.dev",
        "workers.dev",
        "blogspot.com",
        "wordpress.com",
        "substack.com",
        "web.app",
        "firebaseapp.com",
        "azurewebsites.net",
        "cloudfront.net",
        "appspot.com",
        "wixsite.com",
        "squarespace.com",
        "webflow.io",
        "myshopify.com",
    }
)


def public_suffix_length(labels: list[str]) -> int:
    """How many trailing labels of a host form its public suffix (approximation: 1, 2 or the hosting suffix)."""
    if len(labels) >= 2 and ".".join(labels[-2:]) in _SHARED_HOSTING_SUFFIXES:
        return 2
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL_LABELS:
        return 2
    return 1


def registrable_domain(host: str) -> str:
    """The part of a host that one owner registers: ``blog.example.co.uk`` -> ``example.co.uk``.

    IP addresses, ``localhost`` and single-label hosts are returned as they are.
    """
    host = normalize_host(host)
    labels = host.split(".")
    if len(labels) < 2 or host.replace(".", "").isdigit() or ":" in host:
        return host
    suffix = public_suffix_length(labels)
    if len(labels) <= suffix:
        return host
    return ".".join(labels[-(suffix + 1) :])


def normalize_host(host: str) -> str:
    """Lower-case, strip a trailing dot and a port."""
    host = host.strip().lower().rstrip(".")
    if host.count(":") == 1:  # host:port, not an IPv6 address
        host = host.split(":", 1)[0]
    return host


@dataclass(frozen=True)
class SiteMatch:
    category: SiteCategory
    name: str


SiteEntries = Mapping[SiteCategory, Mapping[str, frozenset[str]]]


class _Index:
    """Lookup tables of one set of lists: exact hosts, ``brand.*`` patterns, bare names."""

    def __init__(self, sites: SiteEntries) -> None:
        self.hosts: dict[str, SiteMatch] = {}
        self.brands: dict[str, SiteMatch] = {}
        self.names: dict[str, SiteMatch] = {}
        for category, entries in sites.items():
            for name, patterns in entries.items():
                match = SiteMatch(SiteCategory(category), name)
                self.names.setdefault(name.lower(), match)  # a site's own name finds it: utm_source=linkedin
                for pattern in patterns:
                    pattern = pattern.strip().lower()
                    if pattern.endswith(".*"):
                        self.brands[pattern[:-2]] = match
                    elif "." in pattern:
                        self.hosts[normalize_host(pattern)] = match
                    else:
                        self.names[pattern] = match

    def match_host(self, host: str) -> SiteMatch | None:
        labels = host.split(".")
        for start in range(len(labels)):  # longest suffix first: mail.google.com before google.com
            hit = self.hosts.get(".".join(labels[start:]))
            if hit is not None:
                return hit
        suffix = public_suffix_length(labels)
        if len(labels) > suffix:
            return self.brands.get(labels[-(suffix + 1)])
        return None


@dataclass(frozen=True)
class SiteLists:
    """The five site lists, plus the user's additions (looked up first), indexed by host and by bare name."""

    sites: SiteEntries = field(default_factory=lambda: DEFAULT_SITES)
    additions: SiteEntries = field(default_factory=dict)
    _indexes: tuple[_Index, _Index] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_indexes", (_Index(self.additions), _Index(self.sites)))

    def match(self, value: str | None) -> SiteMatch | None:
        """The site a host (``m.youtube.com``) or a ``utm_source`` (``fb``, ``google.com``) stands for."""
        if not value:
            return None
        value = value.strip().lower()
        if "://" in value:  # someone put a URL in utm_source
            value = value.split("://", 1)[1].split("/", 1)[0]
        host = normalize_host(value)
        for index in self._indexes:
            hit = index.names.get(value) or (index.match_host(host) if "." in host else None)
            if hit is not None:
                return hit
        return None

    def is_category(self, value: str | None, category: SiteCategory) -> bool:
        hit = self.match(value)
        return hit is not None and hit.category == category

    def with_additions(self, additions: Mapping[str, object]) -> "SiteLists":
        """A copy with user entries, e.g. ``{"search": ["kagi.com"], "social": {"mastodon": ["chaos.social"]}}``.

        A plain list names each host after its registrable label (``kagi.com`` -> ``kagi``). User entries are
        looked up before the default lists, so they can also move a site to another category.
        Raises ValueError, naming the offending entry, when the shape is wrong.
        """
        merged: dict[SiteCategory, dict[str, frozenset[str]]] = {c: dict(e) for c, e in self.additions.items()}
        if not isinstance(additions, Mapping):
            raise ValueError(f'sites must be an object of lists, e.g. {{"search": ["kagi.com"]}}, not {additions!r}')
        for category_name, entries in additions.items():
            try:
                category = SiteCategory(str(category_name).strip().lower())
            except ValueError:
                known = ", ".join(c.value for c in SiteCategory)
                raise ValueError(f"sites.{category_name} is not a site list; use one of: {known}") from None
            named: dict[str, set[str]]
            if isinstance(entries, Mapping):
                named = {str(n).strip().lower(): _patterns(h, f"sites.{category}.{n}") for n, h in entries.items()}
            else:
                named = {}
                for host in _patterns(entries, f"sites.{category}"):
                    named.setdefault(_brand_of(host), set()).add(host)
            target = merged.setdefault(category, {})
            for name, hosts in named.items():
                target[name] = target.get(name, frozenset()) | frozenset(hosts)
        return SiteLists(self.sites, merged)


def _patterns(hosts: object, where: str) -> set[str]:
    if isinstance(hosts, str) or not isinstance(hosts, Iterable):
        raise ValueError(f'{where} must be a list of host names, e.g. ["kagi.com"], not {hosts!r}')
    result = set()
    for host in hosts:
        if not isinstance(host, str) or not host.strip():
            raise ValueError(f"{where} holds {host!r}; each entry must be a non-empty host name such as kagi.com")
        result.add(host.strip().lower())
    return result


def _brand_of(host: str) -> str:
    """The registrable label of a host pattern: ``kagi.com`` -> ``kagi``, ``google.*`` -> ``google``."""
    if host.endswith(".*"):
        return host[:-2].rsplit(".", 1)[-1]
    if "." not in host:
        return host
    return registrable_domain(host).split(".", 1)[0]
