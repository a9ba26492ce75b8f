"""An order-independent digest of a model's input rows, computed by the database.

Two retrains whose inputs are the same rows show the same digest; any inserted,
deleted or changed row (in the model's columns) changes it. Computed through
dbgov's own upstream connection (the target's service credentials, as
`proxy/catalogs.py` connects), never through a user's session, and server-side
in one aggregate query per table so that it scales with the table, not with
what the client can hold.

Algorithm `sha256-sum256/v1`, per input table:

    row text  = the row's text output, `t::text` for a whole-row input, or
                `ROW(t.c1, t.c2, ...)::text` with the model's columns sorted by
                name, under pinned settings (TimeZone UTC, DateStyle ISO,
                IntervalStyle postgres, extra_float_digits 1, bytea_output hex)
                so the same values always print the same
    row hash  = SHA-256 of the row text (UTF-8), read as a 256-bit big-endian number
    digest    = sum of the row hashes mod 2**256 (a multiset hash: order-free,
                and unlike XOR a duplicated row does not cancel out)

The server sums each 32-bit word of the hashes separately (exact in `numeric`);
the words are recombined here. The model digest is the SHA-256 of the canonical
JSON list of (target, table, columns, rows, digest) for every input, sorted.
All of a target's tables are read in one REPEATABLE READ snapshot.

A whole-row digest changes with DDL that changes the row (a new column); that
is a change of the inputs too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import sql

from dbgov.config import Config, ConfigError
from dbgov.ledger.canonical import canonical_json
from dbgov.models.registry import Model, ModelInput

__all__ = ["ALGORITHM", "FingerprintError", "combine_words", "fingerprint", "row_hash_sum"]

ALGORITHM: Final = "sha256-sum256/v1"
WORDS: Final = 8  # 32-bit words in a SHA-256
_MOD: Final = 1 << 256
SETTINGS: Final = (
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "1"),
    ("bytea_output", "hex"),
)


class FingerprintError(Exception):
    """The digest could not be computed; the message says which target and table."""


@dataclass(frozen=True, slots=True)
class TableDigest:
    target: str
    table: str
    columns: tuple[str, ...] | None
    rows: int
    digest: str  # 64 hex digits

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target": self.target,
            "table": self.table,
            "rows": self.rows,
            "digest": self.digest,
        }
        if self.columns is not None:
            out["columns"] = list(self.columns)
        return out


def combine_words(sums: Sequence[int]) -> str:
    """The sum mod 2**256 of 256-bit hashes, from the sums of their 32-bit words."""
    total = 0
    for i, s in enumerate(sums):
        total += int(s) << (32 * (WORDS - 1 - i))
    return f"{total % _MOD:064x}"


def row_hash_sum(texts: Iterable[str]) -> str:
    """The same digest computed client-side from row texts (the tests' reference)."""
    total = sum(int.from_bytes(hashlib.sha256(t.encode()).digest(), "big") for t in texts)
    return f"{total % _MOD:064x}"


def _row_text(columns: Sequence[str] | None) -> sql.Composable:
    if columns is None:
        return sql.SQL("t::text")
    cols = sql.SQL(", ").join(sql.SQL("t.") + sql.Identifier(c) for c in columns)
    return sql.SQL("ROW({})::text").format(cols)


def table_query(table: str, columns: Sequence[str] | None) -> sql.Composed:
    """One aggregate over the table: row count and the sum of each hash word."""
    schema, _, name = table.partition(".")
    words = sql.SQL(", ").join(
        sql.SQL(
            "coalesce(sum(('x' || lpad(substr(h, {}, 8), 16, '0'))::bit(64)::bigint), 0)"
        ).format(sql.Literal(1 + 8 * i))
        for i in range(WORDS)
    )
    return sql.SQL(
        "SELECT count(*), {words} FROM (SELECT encode(sha256(convert_to({row}, 'UTF8')), "
        "'hex') AS h FROM {table} AS t) AS s"
    ).format(words=words, row=_row_text(columns), table=sql.Identifier(schema, name))


def _columns(inp: ModelInput) -> tuple[str, ...] | None:
    # Sorted, so reordering the declaration does not change the digest.
    return None if inp.columns is None else tuple(sorted(inp.columns))


async def _target_digests(
    conninfo: str, target: str, inputs: Sequence[ModelInput]
) -> list[TableDigest]:
    out: list[TableDigest] = []
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        await conn.set_read_only(True)
        async with conn.transaction():
            for name, value in SETTINGS:
                await conn.execute("SELECT set_config(%s, %s, true)", (name, value))
            for inp in inputs:
                cols = _columns(inp)
                cur = await conn.execute(table_query(inp.table, cols))
                row = await cur.fetchone()
                assert row is not None  # an aggregate always returns a row
                out.append(
                    TableDigest(
                        target,
                        inp.table,
                        cols,
                        int(row[0]),
                        combine_words([int(v) for v in row[1:]]),
                    )
                )
    return out


async def fingerprint(config: Config, model: Model) -> dict[str, Any]:
    """The `fingerprint` field of a `model.retrain` event, read from every target."""
    from dbgov.proxy.catalogs import conninfo

    targets = sorted(model.targets) or sorted(t.name for t in config.targets)
    tables: list[TableDigest] = []
    for name in targets:
        target = config.target(name)
        if target is None:
            raise FingerprintError(f"model {model.name}: target {name!r} is not in the config")
        try:
            tables.extend(await _target_digests(conninfo(target), name, model.inputs))
        except (psycopg.Error, ConfigError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FingerprintError(f"model {model.name} on {name}: {first}") from None
    tables.sort(key=lambda d: (d.target, d.table))
    listed = [d.as_json() for d in tables]
    return {
        "algorithm": ALGORITHM,
        "digest": hashlib.sha256(canonical_json(listed)).hexdigest(),
        "tables": listed,
    }
