"""Statement analysis on pglast: classify, objects read/written, lineage, cache.

Pure functions over query text and a catalog snapshot; no I/O. Policy decides on
`analyze_cached(text)`'s facts, masking on `lineage(stmt, catalog, search_path)`.
"""

from dbgov.sql.analyze import analyze, analyze_cached, cache_info, clear_cache, split_statements
from dbgov.sql.catalog import Catalog, CatalogColumn, CatalogRelation
from dbgov.sql.lineage import clear_lineage_cache, lineage
from dbgov.sql.model import (
    Analysis,
    Category,
    Column,
    Lineage,
    OutputColumn,
    Relation,
    Statement,
    Use,
)

__all__ = [
    "Analysis",
    "Catalog",
    "CatalogColumn",
    "CatalogRelation",
    "Category",
    "Column",
    "Lineage",
    "OutputColumn",
    "Relation",
    "Statement",
    "Use",
    "analyze",
    "analyze_cached",
    "cache_info",
    "clear_cache",
    "clear_lineage_cache",
    "lineage",
    "split_statements",
]
