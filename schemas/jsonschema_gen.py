"""Generate the JSON Schema files in ``schemas/jsonschema/`` from the pydantic models.

Run ``python -m schemas.jsonschema_gen`` after changing a model; a test fails when the files drift.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.events import CrmStatusChange, Envelope, Identify, PageView, SpendRow
from schemas.outputs import (
    BuyingSignal,
    Conversion,
    Credit,
    DeadLetter,
    IdentityLink,
    Lead,
    LeadScore,
    SalesReadyLead,
    Touch,
)

MODELS: list[type[BaseModel]] = [
    Envelope,
    PageView,
    Identify,
    CrmStatusChange,
    SpendRow,
    Touch,
    IdentityLink,
    Lead,
    Conversion,
    Credit,
    LeadScore,
    SalesReadyLead,
    BuyingSignal,
    DeadLetter,
]
OUT_DIR = Path(__file__).parent / "jsonschema"


def render() -> dict[str, str]:
    """File name -> JSON text, for every model."""
    return {
        f"{model.__name__}.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
        for model in MODELS
    }


def main() -> None:
    OUT_DIR.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT_DIR / name).write_text(text)
    print(f"wrote {len(MODELS)} schemas to {OUT_DIR}")


if __name__ == "__main__":
    main()
