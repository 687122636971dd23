"""Channel classification: every default rule of DOMAIN.md, their order, click ids, referrers, user rules."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from schemas.events import PageView
from stream_jobs.rules.channels import ChannelRules, Classification, campaign_signature, classify
from stream_jobs.rules.sitelists import SiteCategory, SiteLists, registrable_domain

DEFAULT = ChannelRules()
T0 = "2026-03-01T10:00:00Z"


def view(referrer: str | None = None, host: str = "www.example.com", **params: str) -> PageView:
    query = f"?{urlencode(params)}" if params else ""
    return PageView(visitor_id="v1", url=f"https://{host}/landing{query}", referrer=referrer, occurred_at=T0)


def channel(rules: ChannelRules = DEFAULT, referrer: str | None = None, **params: str) -> str:
    result = classify(view(referrer, **params), rules)
    assert result is not None
    return result.channel


# One case per row of the reference table, in its order.
@pytest.mark.parametrize(
    ("params", "referrer", "expected"),
    [
        ({}, None, "Direct"),
        ({"utm_source": "(direct)", "utm_medium": "(none)"}, None, "Direct"),
        ({"utm_source": "(direct)", "utm_medium": "(not set)"}, None, "Direct"),
        ({"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "q2-cross-network"}, None, "Cross-network"),
        ({"utm_source": "amazon", "utm_medium": "ppc"}, None, "Paid Shopping"),
        ({"utm_source": "newsletter", "utm_medium": "paid", "utm_campaign": "summer-shop"}, None, "Paid Shopping"),
        ({"utm_source": "partner", "utm_medium": "cpc", "utm_campaign": "shopping_q3"}, None, "Paid Shopping"),
        ({"utm_source": "google", "utm_medium": "cpc"}, None, "Paid Search"),
        ({"utm_source": "bing", "utm_medium": "paidsearch"}, None, "Paid Search"),
        ({"utm_source": "facebook", "utm_medium": "paid_social"}, None, "Paid Social"),
        ({"utm_source": "linkedin", "utm_medium": "cpc"}, None, "Paid Social"),
        ({"utm_source": "youtube", "utm_medium": "cpv"}, None, "Paid Video"),
        ({"utm_source": "adnet", "utm_medium": "display"}, None, "Display"),
        ({"utm_source": "adnet", "utm_medium": "banner"}, None, "Display"),
        ({"utm_source": "adnet", "utm_medium": "expandable"}, None, "Display"),
        ({"utm_source": "adnet", "utm_medium": "interstitial"}, None, "Display"),
        ({"utm_source": "adnet", "utm_medium": "cpm"}, None, "Display"),
        ({"utm_source": "adnet", "utm_medium": "retargeting"}, None, "Paid Other"),
        ({"utm_source": "podcastads", "utm_medium": "ppc"}, None, "Paid Other"),
        ({"utm_source": "ebay", "utm_medium": "listing"}, None, "Organic Shopping"),
        ({"utm_source": "partner", "utm_medium": "feed", "utm_campaign": "shop"}, None, "Organic Shopping"),
        ({"utm_source": "instagram", "utm_medium": "story"}, None, "Organic Social"),
        ({"utm_source": "forum", "utm_medium": "social-network"}, None, "Organic Social"),
        ({"utm_source": "forum", "utm_medium": "Social Media"}, None, "Organic Social"),
        ({"utm_source": "forum", "utm_medium": "sm"}, None, "Organic Social"),
        ({"utm_source": "vimeo", "utm_medium": "embed"}, None, "Organic Video"),
        ({"utm_source": "webinar", "utm_medium": "video_promo"}, None, "Organic Video"),
        ({"utm_source": "duckduckgo", "utm_medium": "listing"}, None, "Organic Search"),
        ({"utm_source": "directory", "utm_medium": "organic"}, None, "Organic Search"),
        ({"utm_source": "partner", "utm_medium": "referral"}, None, "Referral"),
        ({"utm_source": "partner", "utm_medium": "app"}, None, "Referral"),
        ({"utm_source": "partner", "utm_medium": "link"}, None, "Referral"),
        ({"utm_source": "newsletter", "utm_medium": "email"}, None, "Email"),
        ({"utm_source": "newsletter", "utm_medium": "E-Mail"}, None, "Email"),
        ({"utm_source": "newsletter", "utm_medium": "e_mail"}, None, "Email"),
        ({"utm_source": "newsletter", "utm_medium": "e mail"}, None, "Email"),
        ({"utm_source": "email", "utm_medium": "weekly"}, None, "Email"),
        ({"utm_source": "partnerx", "utm_medium": "affiliate"}, None, "Affiliates"),
        ({"utm_source": "spotify", "utm_medium": "audio"}, None, "Audio"),
        ({"utm_source": "sms", "utm_medium": "reminder"}, None, "SMS"),
        ({"utm_source": "twilio", "utm_medium": "sms"}, None, "SMS"),
        ({"utm_source": "app", "utm_medium": "web-push"}, None, "Mobile Push Notifications"),
        ({"utm_source": "app", "utm_medium": "mobile-banner-free"}, None, "Mobile Push Notifications"),
        ({"utm_source": "app", "utm_medium": "notification"}, None, "Mobile Push Notifications"),
        ({"utm_source": "firebase", "utm_medium": "inapp"}, None, "Mobile Push Notifications"),
        ({"utm_source": "flyer", "utm_medium": "print"}, None, "Unassigned"),
    ],
)
def test_default_channel_rules(params, referrer, expected):
    assert channel(referrer=referrer, **params) == expected


@pytest.mark.parametrize(
    ("params", "expected", "loser"),
    [
        (
            {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "cross-network"},
            "Cross-network",
            "Paid Search",
        ),
        (
            {"utm_source": "(direct)", "utm_medium": "(none)", "utm_campaign": "cross-network"},
            "Direct",
            "Cross-network",
        ),
        ({"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "shopping"}, "Paid Shopping", "Paid Search"),
        ({"utm_source": "google", "utm_medium": "cpm"}, "Paid Search", "Display"),
        ({"utm_source": "adnet", "utm_medium": "cpm"}, "Display", "Paid Other"),
        ({"utm_source": "facebook", "utm_medium": "display"}, "Display", "Organic Social"),
        ({"utm_source": "amazon", "utm_medium": "social"}, "Organic Shopping", "Organic Social"),
        ({"utm_source": "youtube", "utm_medium": "social"}, "Organic Social", "Organic Video"),
        ({"utm_source": "google", "utm_medium": "video"}, "Organic Video", "Organic Search"),
        ({"utm_source": "google", "utm_medium": "referral"}, "Organic Search", "Referral"),
        ({"utm_source": "email", "utm_medium": "referral"}, "Referral", "Email"),
        ({"utm_source": "email", "utm_medium": "affiliate"}, "Email", "Affiliates"),
        ({"utm_source": "sms", "utm_medium": "audio"}, "Audio", "SMS"),
        ({"utm_source": "sms", "utm_medium": "push"}, "SMS", "Mobile Push Notifications"),
    ],
)
def test_rule_order(params, expected, loser):
    assert channel(**params) == expected, f"{expected} must be evaluated before {loser}"


def test_shop_regex_needs_a_word_boundary_or_shopping():
    assert channel(utm_source="partner", utm_medium="feed", utm_campaign="workshop") == "Unassigned"  # 'k' before shop
    assert channel(utm_source="partner", utm_medium="feed", utm_campaign="eshop") == "Organic Shopping"  # 'e' allowed
    assert channel(utm_source="partner", utm_medium="feed", utm_campaign="my-shop") == "Organic Shopping"
    assert channel(utm_source="partner", utm_medium="feed", utm_campaign="bookshopping") == "Organic Shopping"


def test_rules_are_case_insensitive():
    assert channel(utm_source="GOOGLE", utm_medium="CPC") == "Paid Search"
    assert channel(utm_source="Partner", utm_medium="Referral") == "Referral"
    assert channel(utm_source="x", utm_medium="CPC", utm_campaign="Cross-Network") == "Cross-network"


def test_gclid_and_msclkid_are_paid_search_of_their_network():
    google = classify(view(gclid="Cj0KCQ"), DEFAULT)
    bing = classify(view(msclkid="abc123"), DEFAULT)
    assert (google.channel, google.source, google.medium, google.click_id) == ("Paid Search", "google", "cpc", "gclid")
    assert (bing.channel, bing.source, bing.medium, bing.click_id) == ("Paid Search", "bing", "cpc", "msclkid")


def test_gclid_fills_only_what_utm_leaves_out():
    tagged = classify(view(gclid="c1", utm_source="partnerx", utm_medium="affiliate"), DEFAULT)
    assert (tagged.channel, tagged.source, tagged.medium) == ("Affiliates", "partnerx", "affiliate")  # UTM wins
    no_medium = classify(view(gclid="c1", utm_source="google"), DEFAULT)
    assert (no_medium.channel, no_medium.source, no_medium.medium) == ("Paid Search", "google", "cpc")
    no_source = classify(view(gclid="c1", utm_medium="cpc", utm_campaign="brand"), DEFAULT)
    assert (no_source.channel, no_source.source, no_source.campaign) == ("Paid Search", "google", "brand")


def test_fbclid_and_li_fat_id_are_not_paid_by_themselves():
    facebook = classify(view("https://l.facebook.com/", fbclid="IwAR0"), DEFAULT)
    assert (facebook.channel, facebook.source, facebook.medium, facebook.click_id) == (
        "Organic Social",
        "facebook",
        "social",
        "fbclid",
    )
    stripped = classify(view(fbclid="IwAR0"), DEFAULT)  # the app stripped the referrer
    assert (stripped.channel, stripped.source) == ("Organic Social", "facebook")
    linkedin = classify(view(li_fat_id="abc"), DEFAULT)
    assert (linkedin.channel, linkedin.source, linkedin.medium) == ("Organic Social", "linkedin", "social")
    paid = classify(view(fbclid="IwAR0", utm_source="facebook", utm_medium="paid_social"), DEFAULT)
    assert paid.channel == "Paid Social"


@pytest.mark.parametrize(
    ("referrer", "source", "medium", "expected"),
    [
        ("https://www.google.com/", "google", "organic", "Organic Search"),
        ("https://www.google.de/search?q=x", "google", "organic", "Organic Search"),
        ("https://google.co.uk/", "google", "organic", "Organic Search"),
        ("https://www.bing.com/search", "bing", "organic", "Organic Search"),
        ("https://duckduckgo.com/", "duckduckgo", "organic", "Organic Search"),
        ("https://search.yahoo.co.jp/", "yahoo", "organic", "Organic Search"),
        ("https://l.facebook.com/l.php", "facebook", "social", "Organic Social"),
        ("https://t.co/abc", "twitter", "social", "Organic Social"),
        ("https://lnkd.in/xyz", "linkedin", "social", "Organic Social"),
        ("https://www.linkedin.com/feed/", "linkedin", "social", "Organic Social"),
        ("https://m.youtube.com/watch?v=1", "youtube", "referral", "Organic Video"),
        ("https://www.amazon.de/dp/1", "amazon", "referral", "Organic Shopping"),
        ("https://mail.google.com/mail/u/0/", "gmail", "email", "Email"),
        ("https://news.ycombinator.com/item?id=1", "hackernews", "social", "Organic Social"),
        ("https://www.partner-blog.org/post", "partner-blog.org", "referral", "Referral"),
        ("https://docs.partner.io/guide", "docs.partner.io", "referral", "Referral"),
    ],
)
def test_referrer_decides_without_utm(referrer, source, medium, expected):
    result = classify(view(referrer), DEFAULT)
    assert (result.channel, result.source, result.medium) == (expected, source, medium)
    assert result.referrer_host == referrer.split("/")[2]


def test_no_referrer_is_direct():
    assert classify(view(), DEFAULT) == Classification("Direct", "(direct)", "(none)")


def test_unparseable_referrer_counts_as_none():
    assert classify(view("not a url"), DEFAULT).channel == "Direct"


@pytest.mark.parametrize(
    "referrer",
    [
        "https://www.example.com/pricing",
        "https://blog.example.com/post",
        "https://example.com/",
        "http://EXAMPLE.com:8080/",
    ],
)
def test_internal_referrer_is_not_a_touch(referrer):
    assert classify(view(referrer, host="www.example.com"), DEFAULT) is None


def test_internal_referrer_with_campaign_parameters_is_a_touch():
    result = classify(view("https://www.example.com/", utm_source="newsletter", utm_medium="email"), DEFAULT)
    assert (result.channel, result.source, result.referrer_host) == ("Email", "newsletter", "www.example.com")
    assert classify(view("https://www.example.com/", gclid="x"), DEFAULT).channel == "Paid Search"
    assert classify(view("https://www.example.com/", utm_campaign="spring"), DEFAULT).source == "(not set)"


def test_internal_rule_uses_the_registrable_domain():
    assert registrable_domain("shop.example.co.uk") == "example.co.uk"
    assert registrable_domain("www.example.com") == "example.com"
    assert classify(view("https://blog.example.co.uk/", host="shop.example.co.uk"), DEFAULT) is None
    other_customer = classify(view("https://alice.github.io/", host="bob.github.io"), DEFAULT)
    assert (other_customer.channel, other_customer.source) == ("Referral", "alice.github.io")
    assert classify(view("https://example.org/", host="www.example.com"), DEFAULT).channel == "Referral"


def test_configured_internal_hosts():
    rules = ChannelRules.from_config({"internal_hosts": ["example-shop.com"]})
    assert classify(view("https://checkout.example-shop.com/", host="www.example.com"), rules) is None
    assert classify(view("https://example-shop.com/", host="www.example.com"), rules) is None
    assert classify(view("https://notexample-shop.com/", host="www.example.com"), rules).channel == "Referral"


@pytest.mark.parametrize(
    ("utm_source", "normalised"),
    [
        ("www.google.com", "google"),
        ("Google", "google"),
        ("linkedin.com", "linkedin"),
        ("lnkd.in", "linkedin"),
        ("LinkedIn", "linkedin"),
        ("fb", "facebook"),
        ("IG", "instagram"),
        ("https://m.youtube.com/", "youtube"),
        ("t.co", "twitter"),
        ("Partnerx", "partnerx"),
    ],
)
def test_source_names_are_normalised(utm_source, normalised):
    assert classify(view(utm_source=utm_source, utm_medium="x"), DEFAULT).source == normalised


def test_fields_are_carried():
    result = classify(
        view(
            utm_source="google",
            utm_medium="cpc",
            utm_campaign="Spring Sale",
            utm_term="crm tool",
            utm_content="ad-2",
            gclid="g1",
        ),
        DEFAULT,
    )
    assert result == Classification("Paid Search", "google", "cpc", "Spring Sale", "crm tool", "ad-2", "gclid", "")


def test_missing_source_or_medium_is_not_set():
    assert classify(view(utm_source="partner"), DEFAULT).medium == "(not set)"
    no_source = classify(view(utm_medium="affiliate"), DEFAULT)
    assert (no_source.source, no_source.channel) == ("(not set)", "Affiliates")
    from_referrer = classify(view("https://www.google.com/", utm_medium="cpc"), DEFAULT)
    assert (from_referrer.source, from_referrer.channel) == ("google", "Paid Search")


def test_user_rules_come_before_the_defaults():
    rules = ChannelRules.from_config(
        {
            "rules": [
                {"medium": "newsletter", "channel": "Email"},
                {"source": "partnerx", "channel": "Affiliates"},
                {"source": ["google"], "campaign_regex": "^brand", "channel": "Brand Search"},
            ]
        }
    )
    assert channel(rules, utm_source="weekly", utm_medium="Newsletter") == "Email"
    assert channel(DEFAULT, utm_source="weekly", utm_medium="Newsletter") == "Unassigned"
    assert channel(rules, utm_source="PartnerX", utm_medium="cpc") == "Affiliates"
    assert channel(rules, utm_source="google", utm_medium="cpc", utm_campaign="Brand-DE") == "Brand Search"
    assert channel(rules, utm_source="google", utm_medium="cpc", utm_campaign="generic") == "Paid Search"


def test_user_rules_see_referrer_derived_fields():
    rules = ChannelRules.from_config(
        [
            {"source": "partnerx.com", "channel": "Affiliates"},
            {"referrer_host_regex": r"(^|\.)intranet\.corp$", "channel": "Internal Tools"},
        ]
    )
    assert channel(rules, referrer="https://www.partnerx.com/deal") == "Affiliates"
    assert channel(rules, referrer="https://wiki.intranet.corp/") == "Internal Tools"


def test_user_site_list_additions():
    rules = ChannelRules.from_config(
        {
            "sites": {
                "search": ["kagi.com"],
                "social": {"mastodon": ["chaos.social"]},
                "shopping": ["partnershop.example"],
            }
        }
    )
    kagi = classify(view("https://kagi.com/search?q=crm"), rules)
    assert (kagi.channel, kagi.source, kagi.medium) == ("Organic Search", "kagi", "organic")
    assert classify(view("https://chaos.social/@someone"), rules).source == "mastodon"
    assert channel(rules, utm_source="partnershop", utm_medium="cpc") == "Paid Shopping"
    moved = ChannelRules.from_config({"sites": {"video": ["linkedin.com"]}})
    assert channel(moved, referrer="https://www.linkedin.com/") == "Organic Video"  # user entries are looked up first


def test_rules_file_json_and_toml(tmp_path):
    json_file = tmp_path / "rules.json"
    json_file.write_text(
        json.dumps({"rules": [{"medium": "newsletter", "channel": "Email"}], "sites": {"search": ["kagi.com"]}})
    )
    assert channel(ChannelRules.from_file(json_file), utm_source="a", utm_medium="newsletter") == "Email"
    toml_file = tmp_path / "rules.toml"
    toml_file.write_text(
        'internal_hosts = ["example-shop.com"]\n[[rules]]\nsource = "partnerx"\nchannel = "Affiliates"\n'
    )
    toml_rules = ChannelRules.from_file(toml_file)
    assert channel(toml_rules, utm_source="partnerx", utm_medium="x") == "Affiliates"
    assert toml_rules.internal_hosts == frozenset({"example-shop.com"})
    assert ChannelRules.from_file(None) == ChannelRules()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"rules": [{"medium": "newsletter"}]}, 'rules[0] needs a "channel"'),
        ({"rules": [{"channel": "Email"}]}, "rules[0] has no condition"),
        ({"rules": [{"mediun": "x", "channel": "Email"}]}, "unknown condition 'mediun'"),
        ({"rules": [{"source_regex": "(", "channel": "X"}]}, "not a valid regular expression"),
        ({"rules": [{"source": 3, "channel": "X"}]}, "rules[0].source must be a string"),
        ({"sites": {"podcasts": ["a.com"]}}, "sites.podcasts is not a site list"),
        ({"sites": {"search": "kagi.com"}}, "sites.search must be a list"),
        ({"internal_hosts": "example.com"}, '"internal_hosts" must be a list'),
        ({"rule": []}, "unknown key(s) ['rule']"),
    ],
)
def test_bad_rules_give_clear_errors(config, message):
    with pytest.raises(ValueError) as error:
        ChannelRules.from_config(config)
    assert message in str(error.value)


def test_bad_rules_file_names_the_file(tmp_path):
    broken = tmp_path / "rules.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="rules.json is not valid JSON"):
        ChannelRules.from_file(broken)
    with pytest.raises(ValueError, match="cannot read channel rules file"):
        ChannelRules.from_file(tmp_path / "missing.json")


def test_site_lists_prefer_the_most_specific_host():
    sites = SiteLists()
    assert sites.match("mail.google.com").category == SiteCategory.EMAIL
    assert sites.match("www.google.com").category == SiteCategory.SEARCH
    assert sites.match("mail.yahoo.com").name == "yahoomail"
    assert sites.match("de.search.yahoo.com").name == "yahoo"
    assert sites.match("www.google.example.com") is None  # 'google' is not the registrable label here
    assert sites.match("") is None


def test_campaign_signature():
    assert campaign_signature(view()) == ""
    assert campaign_signature(view(utm_source="A", utm_medium="B")) == campaign_signature(
        view(utm_source="a", utm_medium="b")
    )
    assert campaign_signature(view(gclid="x1")) != campaign_signature(view(gclid="x2"))
