"""Known values: the values of a masked column found again inside free text.

Unit cases pin the matcher (case, word boundaries, overlaps, Unicode offsets, short
values), the pii_text masker built on it (labels, pseudonyms that equal the column's
own pseudonym) and the policy option. The end-to-end cases run through the shared
`dbgov up`: a customer added through dbgov is masked in prompts from the next
statement on, and a second worker learns of the write from the stamp the first
one leaves, against the real database.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbgov.config import load_config
from dbgov.gate import SessionContext
from dbgov.identity import Identity
from dbgov.layout import Layout
from dbgov.masking.engine import MaskingEngine, _Col
from dbgov.masking.known import MIN_CHARS, KnownValues, fold, label_of
from dbgov.masking.maskers import Mask, Masker, MaskKind, MaskSpecError, validate
from dbgov.masking.pii import find_spans
from dbgov.proxy import catalogs as catalogs_mod
from dbgov.sql import Catalog, CatalogColumn, CatalogRelation, analyze
from dbgov.wire.postgres.messages import FieldDescription

KEY = b"k" * 32
NAMES = KnownValues(
    {"FULL_NAME": ["Ann Lee", "Ann Lee Smith", "José Álvarez", "Ng", "O'Brien Kai"]}
)


def found(text: str, known: KnownValues = NAMES) -> list[tuple[str, str]]:
    return [(s.type, text[s.start : s.end]) for s in find_spans(text, known=known)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ticket from Ann Lee about billing", [("full_name", "Ann Lee")]),
        ("ANN LEE wrote twice", [("full_name", "ANN LEE")]),
        ("ann lee's invoice", [("full_name", "ann lee")]),
        # the longest value wins where two overlap
        ("Ann Lee Smith called", [("full_name", "Ann Lee Smith")]),
        (
            "for josé álvarez (jose@example.com)",
            [
                ("full_name", "josé álvarez"),
                ("email", "jose@example.com"),
            ],
        ),
        ("by O'Brien Kai.", [("full_name", "O'Brien Kai")]),
        # not glued to letters or digits on either side
        ("Ann Leeds is someone else", []),
        ("JoAnn Lee is someone else", []),
        ("Ann Lee2", []),
        # a different spacing is a known miss (module docstring)
        ("Ann  Lee", []),
        # values shorter than MIN_CHARS are not searched: "Ng" would mask "ng" words
        ("Ng said nothing", []),
        ("nothing to see", []),
    ],
)
def test_known_values_are_found(text: str, expected: list[tuple[str, str]]) -> None:
    assert found(text) == expected


def test_offsets_survive_case_folds_that_change_length() -> None:
    # "İ".lower() is two characters: folding keeps one for one, so offsets hold.
    text = "İİ from Ann Lee"
    assert len(fold(text)) == len(text)
    assert found(text) == [("full_name", "Ann Lee")]
    istanbul = KnownValues({"CITY": ["İzmir Kaya"]})
    assert found("met İzmir Kaya today", istanbul) == [("city", "İzmir Kaya")]


def test_short_and_empty_sources() -> None:
    assert KnownValues({}).find("Ann Lee") == []
    short = KnownValues({"X": ["a" * (MIN_CHARS - 1), " ", ""]})
    assert short.size == 0 and short.find("aaa") == []
    assert label_of("public.customers.full_name") == "FULL_NAME"


def test_pii_text_masker_labels_and_pseudonymizes_known_values() -> None:
    mask = Mask(MaskKind.PII_TEXT, known=("public.customers.full_name",))
    labelled = Masker(mask, 25, KEY, known=NAMES)
    out = labelled.text(b"Ann Lee (ann@example.com) asked")
    assert out == b"[FULL_NAME] ([EMAIL]) asked"
    # replace=pseudonym: the token is the column pseudonym of the value as stored
    pseudo = Mask(MaskKind.PII_TEXT, replace="pseudonym", known=("public.customers.full_name",))
    column = Masker(Mask(MaskKind.PSEUDONYM), 25, KEY).text(b"Ann Lee")
    assert column is not None
    out = Masker(pseudo, 25, KEY, known=NAMES).text(b"hi ANN LEE")
    assert out == b"hi [FULL_NAME:" + column + b"]"
    # without known values the detectors alone run: the name stays
    assert Masker(mask, 25, KEY).text(b"Ann Lee") == b"Ann Lee"


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "pii_text", "known": "public.customers.full_name"},  # not a list
        {"kind": "pii_text", "known": ["customers.full_name"]},  # two parts
        {"kind": "pii_text", "known": ["public..full_name"]},  # an empty part
        {"kind": "pii_text", "known": [42]},
        {"kind": "pseudonym", "known": ["public.customers.full_name"]},  # pii_text only
    ],
)
def test_known_option_is_checked(spec: dict[str, Any]) -> None:
    with pytest.raises(MaskSpecError, match="known"):
        validate(spec)


def _engine_plan(known: dict[str, tuple[str, ...] | None]) -> Any:
    col = "public.prompts.prompt_text"
    mask = validate({"kind": "pii_text", "known": ["public.customers.full_name"]})
    engine = MaskingEngine({col: _Col(mask, frozenset())}, "deny", frozenset(), KEY)
    rel = CatalogRelation(1, "public", "prompts", "r", (CatalogColumn("prompt_text", 1, 25),))
    catalog = Catalog.of([rel], version=7)
    catalog.known.update(known)
    ctx = SessionContext(
        Identity("alice", frozenset({"analysts"}), "token", "test"), "prod", "production"
    )
    stmt = analyze("SELECT prompt_text FROM prompts").statements[0]
    field = FieldDescription("prompt_text", 1, 1, 25, -1, -1, 0)
    return engine.plan(stmt, (field,), ctx, catalog).columns[0]


def test_a_reload_with_the_same_values_keeps_the_masker_and_its_memo() -> None:
    col = "public.prompts.prompt_text"
    mask = validate({"kind": "pii_text", "known": ["public.customers.full_name"]})
    engine = MaskingEngine({col: _Col(mask, frozenset())}, "deny", frozenset(), KEY)
    rel = CatalogRelation(1, "public", "prompts", "r", (CatalogColumn("prompt_text", 1, 25),))
    ctx = SessionContext(
        Identity("alice", frozenset({"analysts"}), "token", "test"), "prod", "production"
    )
    stmt = analyze("SELECT prompt_text FROM prompts").statements[0]
    field = FieldDescription("prompt_text", 1, 1, 25, -1, -1, 0)
    values = ("Ann Lee",)

    def plan(version: int, known: tuple[str, ...]) -> Any:
        catalog = Catalog.of([rel], version=version)
        catalog.known["public.customers.full_name"] = known
        return engine.plan(stmt, (field,), ctx, catalog).columns[0]  # type: ignore[union-attr]

    first = plan(1, values)
    assert plan(2, values).text is first.text  # a newer snapshot, the same tuple
    changed = plan(3, (*values, "Zeb Quartermaine"))
    assert changed.text is not first.text
    assert changed.text(b"Zeb Quartermaine and Ann Lee") == b"[FULL_NAME] and [FULL_NAME]"


def test_known_values_that_could_not_be_loaded_redact_whole_texts() -> None:
    ok = _engine_plan({"public.customers.full_name": ("Ann Lee",)})
    assert ok.text(b"from Ann Lee") == b"from [FULL_NAME]"
    for missing in ({"public.customers.full_name": None}, {}):
        plan = _engine_plan(missing)
        assert plan.constant and "known values not loaded" in plan.column
        assert plan.text(b"from Ann Lee") == b"[REDACTED]"


# ---------------------------------------------------------------------------
# end to end, on the shared demo world

NEW_NAME = "Zebulon Quartermaine"


def _alice_prompt(dbgov: Any, prompt_id: int) -> str:
    with psycopg.connect(dbgov.dsn("alice"), autocommit=True) as conn:
        row = conn.execute("SELECT prompt_text FROM prompts WHERE id = %s", (prompt_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_a_customer_added_through_dbgov_is_masked_in_prompts(dbgov: Any) -> None:
    with psycopg.connect(dbgov.dsn("carol"), autocommit=True) as conn:
        try:
            with conn.transaction():  # found once the transaction commits
                cur = conn.execute(
                    "INSERT INTO customers (full_name, email, country, created_at) "
                    "VALUES (%s, 'zq@example.net', 'US', now()) RETURNING id",
                    (NEW_NAME,),
                )
                cid = cur.fetchone()[0]  # type: ignore[index]
                cur = conn.execute(
                    "INSERT INTO prompts (customer_id, model, prompt_text, created_at) "
                    "VALUES (%s, 'm', %s, now()) RETURNING id",
                    (cid, f"Summarize the account of {NEW_NAME.upper()}, please."),
                )
                pid = cur.fetchone()[0]  # type: ignore[index]
            deadline = time.monotonic() + 10
            seen = _alice_prompt(dbgov, pid)
            while "[FULL_NAME]" not in seen and time.monotonic() < deadline:
                time.sleep(0.05)  # the reload runs in the background after the commit
                seen = _alice_prompt(dbgov, pid)
            assert seen == "Summarize the account of [FULL_NAME], please."
            carol = conn.execute("SELECT prompt_text FROM prompts WHERE id = %s", (pid,))
            assert NEW_NAME.upper() in carol.fetchone()[0]  # type: ignore[index]  # dba: raw
        finally:
            conn.execute(
                "DELETE FROM prompts WHERE prompt_text LIKE %s", (f"%{NEW_NAME.upper()}%",)
            )
            conn.execute("DELETE FROM customers WHERE full_name = %s", (NEW_NAME,))


def test_other_workers_reload_on_the_write_stamp(dbgov: Any) -> None:
    """Two catalog sets as two workers hold them, on the real target: the one that saw
    the write stamps it, the other reloads at its next look."""
    config = load_config(Layout(dbgov.data_dir).effective_config)
    known = frozenset({"public.customers.full_name"})

    async def run() -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
        first, second = catalogs_mod.Catalogs(config, known), catalogs_mod.Catalogs(config, known)
        await first.ensure("prod")
        await second.ensure("prod")
        before = second.get("prod")
        assert before is not None
        dbgov.app(
            "INSERT INTO customers (full_name, email, country, created_at) "
            "VALUES (%s, 'zq2@example.net', 'US', now())",
            (NEW_NAME,),
        )
        try:
            first.wrote("prod", ["customers"])
            await asyncio.sleep(catalogs_mod.STAMP_CHECK_S + 0.05)
            second.get("prod")  # looks at the stamp, starts the reload
            reload = second._loading.get("prod")
            assert reload is not None, "the write stamp was not noticed"
            await asyncio.wait_for(reload, 10)
            after = second.get("prod")
            assert after is not None
            # A reload that finds the same values keeps their tuple (and so the
            # engine's matcher and memos).
            unchanged = after.known["public.customers.full_name"]
            second.refresh("prod")
            reload = second._loading.get("prod")
            assert reload is not None
            await asyncio.wait_for(reload, 10)
            again = second.get("prod")
            assert again is not None and again is not after
            assert again.known["public.customers.full_name"] is unchanged
            return before.known["public.customers.full_name"], after.known[
                "public.customers.full_name"
            ]
        finally:
            dbgov.app("DELETE FROM customers WHERE full_name = %s", (NEW_NAME,))

    old, new = asyncio.run(run())
    assert old is not None and NEW_NAME not in old
    assert new is not None and NEW_NAME in new


def test_ddl_makes_every_worker_wait_for_a_reload(dbgov: Any, tmp_path: Path) -> None:
    """DDL committed through one worker: neither that worker nor, once it has looked at
    the stamp, any other serves a snapshot until a reload that began afterwards is in
    (a replaced view must not be traced with its old definition). Stamps go to a run
    dir of their own: the shared world's workers must not see them."""
    config = load_config(Layout(dbgov.data_dir).effective_config)
    config = config.model_copy(update={"data_dir": tmp_path})

    async def run() -> None:
        first, second = catalogs_mod.Catalogs(config), catalogs_mod.Catalogs(config)
        await first.ensure("staging")
        await second.ensure("staging")
        before = second.get("staging")
        assert before is not None
        first.invalidate("staging")
        assert first.get("staging") is None
        await asyncio.wait_for(first._loading["staging"], 10)
        assert first.get("staging") is not None
        await asyncio.sleep(catalogs_mod.SCHEMA_CHECK_S + 0.01)
        assert second.get("staging") is None, "the DDL stamp was not noticed"
        await asyncio.wait_for(second._loading["staging"], 10)
        after = second.get("staging")
        assert after is not None and after is not before
        assert after.version > before.version

    asyncio.run(run())
