"""One lead's whole journey from ClickHouse: its visitors, every page view and form in order with the touches they
started, its lifecycle stages with the CRM's reasons, and each model's credits (``closedloop journey``).

Each part is a parameterised SQL file under ``sinks/reports/`` (``journey_*.sql``, parameter ``{lead_id:String}``),
so a hand-run in ``clickhouse-client`` gives the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from sinks.reports import REPORTS_DIR, ReportResult

SECTIONS = ("visitors", "pages", "stages", "credits")
DEFAULT_PAGE_LIMIT = 1000


@dataclass(frozen=True)
class Journey:
    lead_id: str
    email: str | None  # None when the lead is known only from a CRM record or has been erased
    sections: dict[str, ReportResult]

    @property
    def found(self) -> bool:
        return self.email is not None or any(result.rows for result in self.sections.values())


def read_journey(client: Client, lead_id: str, page_limit: int = DEFAULT_PAGE_LIMIT) -> Journey:
    rows = client.query("SELECT email FROM leads FINAL WHERE lead_id = {lead_id:String}", {"lead_id": lead_id})
    email = rows.result_rows[0][0] if rows.result_rows else None
    sections = {}
    for name in SECTIONS:
        sql = (REPORTS_DIR / f"journey_{name}.sql").read_text(encoding="utf-8")
        params: dict[str, object] = {"lead_id": lead_id}
        if name == "pages":
            params["limit"] = page_limit
        result = client.query(sql, parameters=params)
        sections[name] = ReportResult(
            name=f"journey-{name}", columns=tuple(result.column_names), rows=tuple(map(tuple, result.result_rows))
        )
    return Journey(lead_id, email, sections)
