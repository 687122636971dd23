"""User channel rules and site-list additions, read from the file named by ``CLOSEDLOOP_CHANNEL_RULES_FILE``.

The file is JSON (or TOML when its name ends in ``.toml``)::

    {
      "rules": [
        {"medium": "newsletter", "channel": "Email"},
        {"source": "partnerx", "channel": "Affiliates"},
        {"source": ["capterra", "g2"], "medium": "cpc", "channel": "Paid Review Sites"},
        {"campaign_regex": "^brand[-_]", "channel": "Brand"}
      ],
      "sites": {"search": ["kagi.com"], "social": {"mastodon": ["chaos.social"]}},
      "internal_hosts": ["example.com", "example-shop.com"]
    }

A bare JSON list is read as ``rules`` alone.

A rule matches when every condition holds. Conditions name a field of the classified visit (``source``,
``medium``, ``campaign``, ``term``, ``content``, ``click_id``, ``referrer_host``) with one value or a list of
values (compared case-insensitively, whole value), or ``<field>_regex`` with a regular expression (searched
case-insensitively; anchor it with ``^...$`` for a whole-value match). Fields are compared after normalisation:
``source`` is the site name (``google``, ``linkedin``) or the lower-cased ``utm_source``; ``medium`` is
lower-cased. User rules are evaluated in file order, before the default channel rules; the first match wins.
``channel`` may be any name, a default one or the user's own.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

RULE_FIELDS = ("source", "medium", "campaign", "term", "content", "click_id", "referrer_host")
_IGNORED_KEYS = frozenset({"comment", "name", "description"})


@dataclass(frozen=True)
class UserRule:
    """One user rule: conditions on the classified fields, and the channel they lead to."""

    channel: str
    equals: Mapping[str, frozenset[str]] = field(default_factory=dict)
    patterns: Mapping[str, re.Pattern[str]] = field(default_factory=dict)

    def matches(self, fields: Mapping[str, str]) -> bool:
        for name, values in self.equals.items():
            if fields.get(name, "").lower() not in values:
                return False
        for name, pattern in self.patterns.items():
            if not pattern.search(fields.get(name, "")):
                return False
        return True


@dataclass(frozen=True)
class ChannelConfig:
    """What a channel rules file holds, validated."""

    rules: tuple[UserRule, ...] = ()
    sites: Mapping[str, object] = field(default_factory=dict)
    internal_hosts: frozenset[str] = frozenset()


def parse_rule(raw: object, where: str) -> UserRule:
    """Validate one rule object; ValueError says which rule and what to change."""
    if not isinstance(raw, Mapping):
        raise ValueError(f'{where} must be an object like {{"medium": "newsletter", "channel": "Email"}}')
    channel = raw.get("channel")
    if not isinstance(channel, str) or not channel.strip():
        raise ValueError(f'{where} needs a "channel": the channel name to assign, e.g. "Email"')
    equals: dict[str, frozenset[str]] = {}
    patterns: dict[str, re.Pattern[str]] = {}
    for key, value in raw.items():
        if key == "channel" or key in _IGNORED_KEYS:
            continue
        name = key[:-6] if key.endswith("_regex") else key
        if name not in RULE_FIELDS:
            known = ", ".join(RULE_FIELDS)
            raise ValueError(f"{where}: unknown condition {key!r}; use one of {known} (or <field>_regex)")
        if key.endswith("_regex"):
            if not isinstance(value, str):
                raise ValueError(f"{where}.{key} must be a regular expression string")
            try:
                patterns[name] = re.compile(value, re.IGNORECASE)
            except re.error as error:
                raise ValueError(f"{where}.{key}: {value!r} is not a valid regular expression ({error})") from None
        else:
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
                raise ValueError(f"{where}.{key} must be a string or a non-empty list of strings, not {value!r}")
            equals[name] = frozenset(v.strip().lower() for v in values)
    if not equals and not patterns:
        raise ValueError(f'{where} has no condition: add e.g. "medium": "newsletter" or "source_regex": "..."')
    return UserRule(channel.strip(), equals, patterns)


def parse_config(raw: object, where: str = "channel rules") -> ChannelConfig:
    """Validate the content of a channel rules file (already decoded from JSON/TOML)."""
    if isinstance(raw, list):
        raw = {"rules": raw}
    if not isinstance(raw, Mapping):
        raise ValueError(f'{where} must be an object with "rules", "sites", "internal_hosts" (or a list of rules)')
    unknown = set(raw) - {"rules", "sites", "internal_hosts"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; expected rules, sites, internal_hosts")
    rules_raw = raw.get("rules", [])
    if not isinstance(rules_raw, list):
        raise ValueError(f'{where}: "rules" must be a list of rule objects')
    rules = tuple(parse_rule(rule, f"{where}: rules[{i}]") for i, rule in enumerate(rules_raw))
    sites = raw.get("sites", {})
    if not isinstance(sites, Mapping):
        raise ValueError(f'{where}: "sites" must be an object, e.g. {{"search": ["kagi.com"]}}')
    hosts = raw.get("internal_hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h.strip() for h in hosts):
        raise ValueError(f'{where}: "internal_hosts" must be a list of host names, e.g. ["example.com"]')
    return ChannelConfig(rules, dict(sites), frozenset(h.strip().lower() for h in hosts))


def load_config(path: Path) -> ChannelConfig:
    """Read and validate a channel rules file; errors name the file and the entry at fault."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"cannot read channel rules file {path}: {error.strerror or error}") from None
    try:
        raw = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ValueError(
            f"{path} is not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {error}"
        ) from None
    return parse_config(raw, where=str(path))
