"""Property-based: whatever bytes a CSV file holds, ``closedloop import crm|spend`` never raises; every row is
either published or rejected with its line number and a reason, and the command ends with its documented exit
status (0, 1 or 2), never a traceback. The files are near-CSV: the importers' column names, plausible and
implausible values, bytes that are not UTF-8, NULs, quotes and line breaks in the wrong places."""

from __future__ import annotations

import tempfile
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector import imports
from schemas.topics import Topics

COLUMNS = [
    "email",
    "contact_id",
    "stage",
    "date",
    "value",
    "currency",
    "id",
    "channel",
    "source",
    "medium",
    "campaign",
    "cost",
    "Email",
    " Stage ",
    "other",
]
VALUES = st.one_of(
    st.sampled_from(
        [
            "ann@acme.test",
            " Bob@Acme.TEST ",
            "lead",
            "Closed Won",
            "won",
            "weird",
            "2024-05-01",
            "2024-05-01T10:00:00+02:00",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31",
            "1200.50",
            "1e999999",
            "-3",
            "NaN",
            "Infinity",
            "eur",
            "EUR",
            "Paid Search",
            "",
            "null",
            "0",
            "\x00",
            '"',
            "a,b",
            "x\ny",
            "\r",
            "é",
            "1" * 40,
        ]
    ),
    st.text(max_size=20),
)
ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"])


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """A header of importer (and other) columns, rows of values joined with commas, encoded somehow, with a few
    random bytes spliced in."""
    header = draw(st.lists(st.sampled_from(COLUMNS), min_size=0, max_size=8))
    rows = draw(st.lists(st.lists(VALUES, max_size=9), max_size=6))
    separator = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = separator.join(",".join(cells) for cells in [header, *rows]) + draw(st.sampled_from(["", separator]))
    data = text.encode(draw(ENCODINGS), errors="replace")
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    return data


common = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _file(data: bytes) -> Path:
    handle = tempfile.NamedTemporaryFile(suffix=".csv", delete=False)
    with handle:
        handle.write(data)
    return Path(handle.name)


@common
@given(data=st.one_of(csv_files(), st.binary(max_size=300)), kind=st.sampled_from(["crm", "spend"]))
def test_parse_file_publishes_or_rejects_every_row_and_never_raises(data: bytes, kind: str) -> None:
    path = _file(data)
    try:
        imports.header_problem(path)
        imports.missing_columns(path, kind)  # type: ignore[arg-type]
        lines = len(data.splitlines()) + 1
        summary = imports.ImportSummary()
        records = list(imports.parse_file(path, kind, Topics("t"), summary))  # type: ignore[arg-type]
    finally:
        path.unlink()
    assert summary.rows == summary.accepted + len(summary.rejected) and summary.accepted == len(records)
    for line, errors in summary.rejected:
        assert isinstance(line, int) and 1 <= line <= lines, line
        assert errors
        for error in errors:
            assert isinstance(error["loc"], str) and isinstance(error["msg"], str) and error["msg"]
    for record in records:
        assert record.topic == f"t.{kind}"
        record.key.decode("utf-8")
        assert orjson.loads(record.value)["event"]["type"] == ("crm_status" if kind == "crm" else "spend")


@common
@given(data=st.one_of(csv_files(), st.binary(max_size=300)), kind=st.sampled_from(["crm", "spend"]))
def test_the_import_command_ends_with_its_exit_status_not_a_traceback(data: bytes, kind: str, tmp_path: Path) -> None:
    from closedloop.commands.import_ import command

    path = _file(data)
    try:
        result = CliRunner().invoke(command, [kind, "--dry-run", str(path)], env={"CLOSEDLOOP_DATA_DIR": str(tmp_path)})
    finally:
        path.unlink()
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("kind", ["crm", "spend"])
def test_one_good_row_among_bad_bytes_goes_through(tmp_path: Path, kind: str) -> None:
    good = ("ann@acme.test,lead,2024-05-01" if kind == "crm" else "2024-05-01,Paid Search,5,EUR").encode()
    header = b"email,stage,date" if kind == "crm" else b"date,channel,cost,currency"
    path = tmp_path / "mixed.csv"
    path.write_bytes(header + b"\n\xff\xfe\x00,\x80\n" + good + b'\n"unclosed,\xc3\n')
    summary = imports.ImportSummary()
    records = list(imports.parse_file(path, kind, Topics("t"), summary))  # type: ignore[arg-type]
    assert len(records) == 1
    assert [line for line, _ in summary.rejected] == [2, 4]
