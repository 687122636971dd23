"""``closedloop journey``'s input checks (its reading of ClickHouse is checked by the e2e test on a two-device lead)."""

from __future__ import annotations

from click.testing import CliRunner

from closedloop.cli import main


def test_journey_needs_one_of_email_or_lead_id_and_a_valid_lead_id() -> None:
    both = CliRunner().invoke(main, ["journey", "--email", "a@b.co", "--lead-id", "0" * 32])
    assert (both.exit_code, "give exactly one of --email or --lead-id" in both.output) == (2, True)
    bad = CliRunner().invoke(main, ["journey", "--lead-id", "not-a-lead"])
    assert bad.exit_code == 2
    assert "--lead-id must be a lead id: 32 lower-case hex characters (or give --email)" in bad.output
