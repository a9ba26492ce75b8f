"""Keeping secrets out of the ledger's statement texts.

`CREATE ROLE … PASSWORD 'x'`, `ALTER USER … PASSWORD 'x'` and similar carry a
secret as a string literal; the audit keeps the statement with every string
literal replaced, so the ledger proves the change happened without holding the
password.
"""

from __future__ import annotations

import logging

from pglast import parser

from dbgov.sql.model import Analysis

log = logging.getLogger(__name__)
_SECRET_FLAGS = frozenset({"role_ddl"})


def redact_sql(sql: str, analysis: Analysis) -> str:
    if not any(s.flags & _SECRET_FLAGS for s in analysis.statements):
        return sql
    try:
        tokens = parser.scan(sql)
    except Exception:  # unscannable: keep nothing rather than a secret
        return "[statement text withheld: it may contain a password]"
    out = []
    pos = 0
    for tok in tokens:
        if tok.name in ("SCONST", "USCONST"):
            out.append(sql[pos : tok.start])
            out.append("'[REDACTED]'")
            pos = tok.end + 1
    out.append(sql[pos:])
    return "".join(out)
