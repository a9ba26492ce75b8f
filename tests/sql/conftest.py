"""A catalog shaped like the demo world, built by hand (no database needed)."""

from __future__ import annotations

import pytest

from dbgov.sql.catalog import Catalog, CatalogColumn, CatalogRelation

_TEXT, _INT, _TS, _JSONB, _FLOAT = 25, 23, 1184, 3802, 701


def _table(
    oid: int, name: str, *cols: tuple[str, int], kind: str = "r", sql: str | None = None
) -> CatalogRelation:
    columns = tuple(CatalogColumn(n, i + 1, t) for i, (n, t) in enumerate(cols))
    return CatalogRelation(oid, "public", name, kind, columns, sql)


def demo_relations() -> list[CatalogRelation]:
    return [
        _table(
            16001,
            "customers",
            ("id", _INT),
            ("full_name", _TEXT),
            ("email", _TEXT),
            ("phone", _TEXT),
            ("ssn", _TEXT),
            ("country", _TEXT),
            ("created_at", _TS),
        ),
        _table(
            16002,
            "prompts",
            ("id", _INT),
            ("customer_id", _INT),
            ("model", _TEXT),
            ("prompt_text", _TEXT),
            ("response_text", _TEXT),
            ("created_at", _TS),
        ),
        _table(
            16003,
            "inference_log",
            ("id", _INT),
            ("model_version", _TEXT),
            ("customer_id", _INT),
            ("features", _JSONB),
            ("score", _FLOAT),
            ("latency_ms", _INT),
            ("created_at", _TS),
        ),
        _table(
            16004,
            "feature_store",
            ("customer_id", _INT),
            ("feature", _TEXT),
            ("value", _FLOAT),
            ("updated_at", _TS),
        ),
        _table(
            16005,
            "training_runs",
            ("id", _INT),
            ("model", _TEXT),
            ("started_at", _TS),
            ("finished_at", _TS),
            ("rows_used", _INT),
        ),
        _table(
            16006,
            "v_customers",
            ("id", _INT),
            ("contact", _TEXT),
            ("country", _TEXT),
            kind="v",
            sql="SELECT id, email AS contact, country FROM customers",
        ),
    ]


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.of(demo_relations(), user_functions=[("public", "score_customer")], version=1)
