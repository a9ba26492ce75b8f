"""Facts about one statement, collected from its pglast parse tree.

Theory of operation: `statement_facts()` dispatches on the statement node. Each
statement handler records what it knows specifically (targets written, flags,
names) and hands everything else to `_walk`, a generic descent over every child
node. The generic descent is what makes the analyzer fail closed: a function call
or a relation in a clause no handler knows about (a DEFAULT, a policy's USING, an
XMLTABLE argument) is still found, because `_walk` visits every attribute of every
node it does not know.

Two modes: `run=True` for what executes now, `run=False` for what is only stored
or planned (a view's query, rule actions, SQL function bodies, plain EXPLAIN). In
the second mode no kind is added and relations count as reads, never writes, but
functions and function-derived flags are still recorded: code stored now runs
later, where the analyzer will not see it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pglast import ast, enums

from dbgov.sql.functions import (
    DYNAMIC_SQL_FUNCTIONS,
    DYNAMIC_SQL_PREFIXES,
    NAME_ARG_FUNCTIONS,
    NAME_ARG_PREFIXES,
    REG_TYPES,
)
from dbgov.sql.kinds import CATEGORY_OF_KIND, ROLE_SETTINGS, kind_of
from dbgov.sql.model import Category, Relation, Statement
from dbgov.sql.nodes import func_name, names, option_on, string_const, type_name, walk
from dbgov.sql.predicates import always_true
from dbgov.sql.settings import LEXING_SETTINGS, set_value

__all__ = ["DYNAMIC_SQL_FUNCTIONS", "Malformed", "object_type_name", "statement_facts"]

# DROP/COMMENT object types whose names are relations.
_RELATION_OBJECTS = frozenset(
    {
        enums.ObjectType.OBJECT_TABLE,
        enums.ObjectType.OBJECT_VIEW,
        enums.ObjectType.OBJECT_MATVIEW,
        enums.ObjectType.OBJECT_INDEX,
        enums.ObjectType.OBJECT_SEQUENCE,
        enums.ObjectType.OBJECT_FOREIGN_TABLE,
    }
)
# Object types named `table.name` (DROP TRIGGER t ON tbl; COMMENT ON COLUMN tbl.c).
_ON_RELATION_OBJECTS = frozenset(
    {
        enums.ObjectType.OBJECT_TRIGGER,
        enums.ObjectType.OBJECT_RULE,
        enums.ObjectType.OBJECT_POLICY,
        enums.ObjectType.OBJECT_COLUMN,
        enums.ObjectType.OBJECT_TABCONSTRAINT,
    }
)
_OBJECT_NAMES = {
    enums.ObjectType.OBJECT_MATVIEW: "materialized_view",
    enums.ObjectType.OBJECT_FDW: "foreign_data_wrapper",
    enums.ObjectType.OBJECT_FOREIGN_SERVER: "server",
    enums.ObjectType.OBJECT_STATISTIC_EXT: "statistics",
    enums.ObjectType.OBJECT_TABCONSTRAINT: "constraint",
    enums.ObjectType.OBJECT_DOMCONSTRAINT: "constraint",
}

_CASCADE = enums.DropBehavior.DROP_CASCADE
_VSK = enums.VariableSetKind


def object_type_name(objtype: enums.ObjectType | None) -> str:
    """ "table", "materialized_view", "index", ... for a pglast ObjectType."""
    if objtype is None:
        return "unknown"
    return _OBJECT_NAMES.get(objtype, objtype.name.removeprefix("OBJECT_").lower())


class Malformed(ValueError):
    """A parse tree without something the grammar always provides."""


def _relation(rv: ast.RangeVar | None) -> Relation:
    if rv is None:
        raise Malformed("statement without its target relation")
    return Relation(rv.schemaname, rv.relname or "")


def _refname(rv: ast.RangeVar | None) -> str:
    """The name a DML target goes by in its statement: its alias, else its name."""
    if rv is None:
        raise Malformed("statement without its target relation")
    return rv.alias.aliasname or "" if rv.alias is not None else rv.relname or ""


def _relation_of_names(parts: tuple[str, ...]) -> Relation | None:
    """[catalog.][schema.]name as a Relation."""
    if not parts:
        return None
    return Relation(parts[-2] if len(parts) > 1 else None, parts[-1])


def _is_values_only(node: Any) -> bool:
    return isinstance(node, ast.SelectStmt) and bool(node.valuesLists) and not node.fromClause


@dataclass
class _Facts:
    kinds: set[str] = field(default_factory=set)
    categories: set[Category] = field(default_factory=set)
    reads: set[Relation] = field(default_factory=set)
    writes: set[Relation] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    unfiltered: set[Relation] = field(default_factory=set)
    flags: set[str] = field(default_factory=set)
    dropped: set[str] = field(default_factory=set)
    set_param: tuple[str, str] | None = None
    set_local: bool = False
    prepare_name: str | None = None
    execute_name: str | None = None
    deallocate_name: str | None = None
    cursor_name: str | None = None
    unanalyzed: list[str] = field(default_factory=list)
    literal_sensitive: bool = False


Ctes = frozenset[str]
_Handler = Callable[["_Walker", Any, Ctes, bool], None]


class _Walker:
    """Collects facts for one top-level statement (and everything nested in it)."""

    def __init__(self, top: ast.Node) -> None:
        self.f = _Facts()
        self.top = top  # the statement itself; nested SETs are not session changes

    # -- recording ---------------------------------------------------------

    def kind(self, kind: str, run: bool, category: Category | None = None) -> None:
        if run:
            self.f.kinds.add(kind)
            self.f.categories.add(category or CATEGORY_OF_KIND[kind])

    def read(self, rel: Relation) -> None:
        self.f.reads.add(rel)

    def write(self, rel: Relation, run: bool) -> None:
        (self.f.writes if run else self.f.reads).add(rel)

    def create(self, rv: ast.RangeVar | None, run: bool) -> None:
        """A relation this statement creates: written; flagged when temporary, since a
        temporary relation shadows a table of the same name for the session and the
        proxy's catalog snapshot does not list it."""
        self.write(_relation(rv), run)
        if rv is not None and (
            rv.relpersistence == "t" or (rv.schemaname or "").startswith("pg_temp")
        ):
            self.flag("temp_object", run)

    def flag(self, name: str, run: bool = True) -> None:
        if run:
            self.f.flags.add(name)

    # -- generic descent -------------------------------------------------------

    def walk(self, value: Any, ctes: Ctes, run: bool) -> None:
        # An explicit stack, not recursion: `a || b || ...` nests one node per
        # operator, and a long chain must not exhaust Python's recursion limit.
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, tuple):
                stack.extend(item)
                continue
            if not isinstance(item, ast.Node):
                continue
            handler = _EXPRESSIONS.get(type(item))
            if handler is not None:
                handler(self, item, ctes, run)
            elif type(item) in _STATEMENTS or type(item).__name__.endswith("Stmt"):
                self.statement(item, ctes, run)
            else:
                stack.extend(getattr(item, attr) for attr in item)

    def walk_attrs(self, node: ast.Node, ctes: Ctes, run: bool, skip: tuple[str, ...] = ()) -> None:
        self.walk(tuple(getattr(node, a) for a in node if a not in skip), ctes, run)

    def statement(self, node: ast.Node, ctes: Ctes, run: bool) -> None:
        handler = _STATEMENTS.get(type(node))
        if handler is not None:
            handler(self, node, ctes, run)
            return
        kind, category = kind_of(node)
        self.kind(kind, run, category)
        if kind == "other":
            self.f.unanalyzed.append(f"statement type {type(node).__name__} is not analyzed")
        self.walk_attrs(node, ctes, run)

    # -- expressions --------------------------------------------------------------

    def range_var(self, rv: ast.RangeVar, ctes: Ctes, run: bool) -> None:
        # An unqualified name that matches a CTE in scope is the CTE, not a table.
        if rv.schemaname is None and rv.relname in ctes:
            return
        self.read(_relation(rv))

    def func_call(self, node: ast.FuncCall, ctes: Ctes, run: bool) -> None:
        _, name = func_name(node)
        name = name.lower()
        self.f.functions.add(name)
        if (
            name in NAME_ARG_FUNCTIONS
            or name in DYNAMIC_SQL_FUNCTIONS
            or name.startswith(NAME_ARG_PREFIXES)
        ):
            self.f.literal_sensitive = True
        if name in DYNAMIC_SQL_FUNCTIONS or name.startswith(DYNAMIC_SQL_PREFIXES):
            self.f.flags.add("dynamic_sql")
        if name == "pg_notify":
            self.f.flags.add("notify_payload")
        if name == "set_config":
            self._set_config(node)
        self.walk_attrs(node, ctes, run)

    def _set_config(self, node: ast.FuncCall) -> None:
        setting: str | None = None
        args = tuple(node.args or ())
        first = args[0] if args else None
        if isinstance(first, ast.NamedArgExpr):
            first = first.arg if first.name == "setting_name" else None
        if first is not None:
            setting = string_const(first)
        # A setting name that is not a string constant could be anything.
        if setting is None or setting.lower() in ROLE_SETTINGS:
            self.f.flags.add("set_config_role")
        if setting is None or setting.lower() in LEXING_SETTINGS:
            self.f.flags.add("unsafe_setting")
        if setting is None or setting.lower() == "search_path":
            self.f.flags.add("set_config_search_path")

    def type_cast(self, node: ast.TypeCast, ctes: Ctes, run: bool) -> None:
        if type_name(node.typeName) in REG_TYPES:
            self.f.literal_sensitive = True
        self.walk_attrs(node, ctes, run)

    def current_of(self, node: ast.CurrentOfExpr, ctes: Ctes, run: bool) -> None:
        self.f.flags.add("where_current_of")

    def locking_clause(self, node: ast.LockingClause, ctes: Ctes, run: bool) -> None:
        # FOR UPDATE OF a, b names FROM items (aliases), not new relations.
        self.flag("row_lock", run)

    # -- queries -------------------------------------------------------------------

    def with_clause(self, clause: ast.WithClause | None, ctes: Ctes, run: bool) -> Ctes:
        """Walk the CTE bodies with the right names visible; return the names in scope."""
        if clause is None:
            return ctes
        entries = [c for c in clause.ctes or () if isinstance(c, ast.CommonTableExpr)]
        all_names = ctes | {c.ctename or "" for c in entries}
        visible = ctes
        for cte in entries:
            # WITH RECURSIVE: every CTE of the list is visible in every body; plain WITH:
            # only the earlier ones (a CTE named like a table means the table inside
            # its own body).
            self.walk(cte.ctequery, all_names if clause.recursive else visible, run)
            visible = visible | {cte.ctename or ""}
        return all_names

    def select(self, node: ast.SelectStmt, ctes: Ctes, run: bool) -> None:
        if not _is_values_only(node):
            self.kind("select", run)
        ctes = self.with_clause(node.withClause, ctes, run)
        if node.op != enums.SetOperation.SETOP_NONE:
            self.walk(node.larg, ctes, run)
            self.walk(node.rarg, ctes, run)
        if node.intoClause is not None:
            self.kind("create_table_as", run)
            self.flag("into_table", run)
            if node.intoClause.rel is not None:
                self.create(node.intoClause.rel, run)
        for item in node.fromClause or ():
            self.from_item(item, ctes, run)
        for positional in (node.groupClause, node.distinctClause):
            # GROUP BY 1, ROLLUP (1), DISTINCT ON (1) name an output column by number.
            if any(
                isinstance(n, ast.A_Const) and not isinstance(n.val, ast.String)
                for n in walk(positional)
            ):
                self.f.literal_sensitive = True
        if any(
            isinstance(s, ast.SortBy) and isinstance(s.node, ast.A_Const)
            for s in node.sortClause or ()
        ):
            self.f.literal_sensitive = True
        self.walk_attrs(
            node, ctes, run, skip=("withClause", "larg", "rarg", "intoClause", "fromClause")
        )

    def from_item(self, item: Any, ctes: Ctes, run: bool) -> None:
        if isinstance(item, ast.RangeVar):
            self.range_var(item, ctes, run)
        elif isinstance(item, ast.JoinExpr):
            self.from_item(item.larg, ctes, run)
            self.from_item(item.rarg, ctes, run)
            self.walk(item.quals, ctes, run)
        elif isinstance(item, ast.RangeTableSample):
            self.from_item(item.relation, ctes, run)
            self.walk((item.args, item.repeatable), ctes, run)
        else:  # subqueries, functions, XMLTABLE, JSON_TABLE: nothing special
            self.walk(item, ctes, run)

    def returning(self, node: Any, target: Relation, ctes: Ctes, run: bool) -> None:
        if node.returningClause is not None:
            self.flag("returning", run)
            self.read(target)  # RETURNING reads back the rows written

    def where_target(self, node: Any, target: Relation, run: bool) -> None:
        where = node.whereClause
        if isinstance(where, ast.CurrentOfExpr):
            return
        if run and always_true(where, _refname(node.relation)):
            self.f.unfiltered.add(target)

    def insert(self, node: ast.InsertStmt, ctes: Ctes, run: bool) -> None:
        self.kind("insert", run)
        ctes = self.with_clause(node.withClause, ctes, run)
        target = _relation(node.relation)
        self.write(target, run)
        source = node.selectStmt
        # VALUES ((SELECT ...)) copies table data too, like INSERT ... SELECT.
        if source is not None and (
            not _is_values_only(source) or any(isinstance(n, ast.SubLink) for n in walk(source))
        ):
            self.flag("insert_select", run)
            self.flag("into_table", run)
        conflict = node.onConflictClause
        if conflict is not None and conflict.action == enums.OnConflictAction.ONCONFLICT_UPDATE:
            self.kind("update", run)  # an upsert updates rows too
        self.returning(node, target, ctes, run)
        self.walk_attrs(node, ctes, run, skip=("withClause", "relation"))

    def update(self, node: ast.UpdateStmt, ctes: Ctes, run: bool) -> None:
        self.kind("update", run)
        ctes = self.with_clause(node.withClause, ctes, run)
        target = _relation(node.relation)
        self.write(target, run)
        self.where_target(node, target, run)
        for item in node.fromClause or ():
            self.from_item(item, ctes, run)
        self.returning(node, target, ctes, run)
        self.walk_attrs(node, ctes, run, skip=("withClause", "relation", "fromClause"))

    def delete(self, node: ast.DeleteStmt, ctes: Ctes, run: bool) -> None:
        self.kind("delete", run)
        ctes = self.with_clause(node.withClause, ctes, run)
        target = _relation(node.relation)
        self.write(target, run)
        self.where_target(node, target, run)
        for item in node.usingClause or ():
            self.from_item(item, ctes, run)
        self.returning(node, target, ctes, run)
        self.walk_attrs(node, ctes, run, skip=("withClause", "relation", "usingClause"))

    def merge(self, node: ast.MergeStmt, ctes: Ctes, run: bool) -> None:
        self.kind("merge", run)
        ctes = self.with_clause(node.withClause, ctes, run)
        target = _relation(node.relation)
        self.write(target, run)
        self.from_item(node.sourceRelation, ctes, run)
        name = _refname(node.relation)
        join_all = always_true(node.joinCondition, name)
        for clause in node.mergeWhenClauses or ():
            command = clause.commandType
            if command == enums.CmdType.CMD_UPDATE:
                self.kind("update", run)
            elif command == enums.CmdType.CMD_DELETE:
                self.kind("delete", run)
            elif command == enums.CmdType.CMD_INSERT:
                self.kind("insert", run)
            if command not in (enums.CmdType.CMD_UPDATE, enums.CmdType.CMD_DELETE):
                continue
            # WHEN NOT MATCHED BY SOURCE touches target rows no source row matches,
            # so an empty source makes it every row whatever the join condition says.
            by_source = clause.matchKind == enums.MergeMatchKind.MERGE_WHEN_NOT_MATCHED_BY_SOURCE
            if run and (join_all or by_source) and always_true(clause.condition, name):
                self.f.unfiltered.add(target)
        self.returning(node, target, ctes, run)
        self.walk_attrs(node, ctes, run, skip=("withClause", "relation", "sourceRelation"))

    # -- statements that wrap a query ---------------------------------------------------

    def explain(self, node: ast.ExplainStmt, ctes: Ctes, run: bool) -> None:
        self.kind("explain", run)
        self.flag("explain", run)
        if node.options:
            self.f.literal_sensitive = True  # (ANALYZE 0) vs (ANALYZE 1)
        analyze = option_on(node.options, "analyze")
        if analyze:
            self.flag("explain_analyze", run)
        # Plain EXPLAIN only plans: the inner statement's tables are reads, nothing more.
        self.walk(node.query, ctes, run and analyze)

    def prepare(self, node: ast.PrepareStmt, ctes: Ctes, run: bool) -> None:
        # Decided as if it ran now: EXECUTE may come later under the same policy.
        self.kind("prepare", run)
        self.f.literal_sensitive = True
        if run:
            self.f.prepare_name = node.name
        self.walk(node.query, ctes, run)

    def execute(self, node: ast.ExecuteStmt, ctes: Ctes, run: bool) -> None:
        self.kind("execute", run)
        self.f.literal_sensitive = True
        self.f.execute_name = node.name  # also under EXPLAIN: the caller resolves it
        self.walk(node.params, ctes, run)

    def deallocate(self, node: ast.DeallocateStmt, ctes: Ctes, run: bool) -> None:
        self.kind("deallocate", run)
        self.f.literal_sensitive = True
        self.f.deallocate_name = "" if node.isall or node.name is None else node.name

    def declare(self, node: ast.DeclareCursorStmt, ctes: Ctes, run: bool) -> None:
        self.kind("declare", run)
        self.f.literal_sensitive = True
        self.f.cursor_name = node.portalname
        if (node.options or 0) & enums.CURSOR_OPT_HOLD:
            self.flag("with_hold", run)  # the cursor outlives its transaction
        self.walk(node.query, ctes, run)

    def fetch(self, node: ast.FetchStmt, ctes: Ctes, run: bool) -> None:
        self.kind("move" if node.ismove else "fetch", run)
        self.f.literal_sensitive = True
        self.f.cursor_name = node.portalname or ""

    def close(self, node: ast.ClosePortalStmt, ctes: Ctes, run: bool) -> None:
        self.kind("close", run)
        self.f.literal_sensitive = True
        self.f.cursor_name = node.portalname or ""  # CLOSE ALL

    def create_table_as(self, node: ast.CreateTableAsStmt, ctes: Ctes, run: bool) -> None:
        self.kind(kind_of(node)[0], run)
        self.flag("into_table", run)
        if node.into is not None and node.into.rel is not None:
            self.create(node.into.rel, run)
        self.walk(node.query, ctes, run)
        self.walk_attrs(node, ctes, run, skip=("query", "into"))

    def copy(self, node: ast.CopyStmt, ctes: Ctes, run: bool) -> None:
        self.kind("copy_from" if node.is_from else "copy_to", run)
        self.f.literal_sensitive = True
        if node.relation is not None:
            rel = _relation(node.relation)
            if node.is_from:
                self.write(rel, run)
            else:
                self.read(rel)
        if node.is_program:
            self.flag("copy_program", run)
        elif node.filename is not None:
            self.flag("copy_server_file", run)
        else:
            self.flag("copy_stdio", run)
        self.walk_attrs(node, ctes, run, skip=("relation",))

    # -- DDL ------------------------------------------------------------------------------

    def create_table(self, node: ast.CreateStmt, ctes: Ctes, run: bool) -> None:
        self.kind("create_table", run)
        self.create(node.relation, run)
        # INHERITS / PARTITION OF / LIKE / REFERENCES name other relations: reads.
        # DEFAULT and CHECK expressions run later, invisibly: record their functions.
        self.walk_attrs(node, ctes, False, skip=("relation",))

    def create_foreign_table(self, node: ast.CreateForeignTableStmt, ctes: Ctes, run: bool) -> None:
        self.kind("create_foreign_table", run)
        if node.base is not None and node.base.relation is not None:
            self.create(node.base.relation, run)
            self.walk_attrs(node.base, ctes, False, skip=("relation",))

    def view(self, node: ast.ViewStmt, ctes: Ctes, run: bool) -> None:
        self.kind("create_view", run)
        self.create(node.view, run)
        self.walk(node.query, ctes, False)  # stored, not run: its tables are reads

    def index(self, node: ast.IndexStmt, ctes: Ctes, run: bool) -> None:
        self.kind("create_index", run)
        if node.relation is not None:
            self.write(_relation(node.relation), run)
        if not node.concurrent:
            self.flag("index_not_concurrent", run)
        self.walk_attrs(node, ctes, run, skip=("relation",))

    def reindex(self, node: ast.ReindexStmt, ctes: Ctes, run: bool) -> None:
        self.kind("reindex", run)
        if node.params:
            self.f.literal_sensitive = True  # (CONCURRENTLY 0)
        if node.relation is not None:
            self.write(_relation(node.relation), run)
        if not option_on(node.params, "concurrently"):
            self.flag("index_not_concurrent", run)

    def alter_table(self, node: ast.AlterTableStmt, ctes: Ctes, run: bool) -> None:
        self.kind(kind_of(node)[0], run)
        if node.relation is not None:
            self.write(_relation(node.relation), run)
        for cmd in node.cmds or ():
            if isinstance(cmd, ast.AlterTableCmd) and cmd.behavior == _CASCADE:
                self.flag("drop_cascade", run)
        # ADD COLUMN ... DEFAULT f() and ALTER ... TYPE ... USING run now, on every row.
        self.walk_attrs(node, ctes, run, skip=("relation",))

    def drop(self, node: ast.DropStmt, ctes: Ctes, run: bool) -> None:
        self.kind("drop", run)
        if run:
            self.f.dropped.add(object_type_name(node.removeType))
        if node.behavior == _CASCADE:
            self.flag("drop_cascade", run)
        for obj in node.objects or ():
            if not isinstance(obj, tuple):
                continue
            parts = names(obj)
            if node.removeType in _RELATION_OBJECTS:
                rel = _relation_of_names(parts)
            elif node.removeType in _ON_RELATION_OBJECTS:
                rel = _relation_of_names(parts[:-1])
            else:
                rel = None
            if rel is not None:
                self.write(rel, run)

    def drop_other(self, node: ast.Node, ctes: Ctes, run: bool) -> None:
        self.kind("drop", run)
        what = {
            ast.DropdbStmt: "database",
            ast.DropOwnedStmt: "owned",
            ast.DropSubscriptionStmt: "subscription",
            ast.DropTableSpaceStmt: "tablespace",
            ast.DropUserMappingStmt: "user_mapping",
        }[type(node)]
        if run:
            self.f.dropped.add(what)
        if getattr(node, "behavior", None) == _CASCADE:
            self.flag("drop_cascade", run)

    def truncate(self, node: ast.TruncateStmt, ctes: Ctes, run: bool) -> None:
        self.kind("truncate", run)
        for rv in node.relations or ():
            self.write(_relation(rv), run)
        if node.behavior == _CASCADE:
            self.flag("drop_cascade", run)

    def relation_target(self, node: Any, ctes: Ctes, run: bool) -> None:
        """Statements whose `relation` (or `sequence`/`table`) attribute is the target."""
        kind, category = kind_of(node)
        self.kind(kind, run, category)
        target = None
        for attr in ("relation", "sequence", "table"):
            if attr in node.__slots__ and isinstance(getattr(node, attr), ast.RangeVar):
                target = attr
                if isinstance(node, ast.CreateSeqStmt):
                    self.create(node.sequence, run)
                else:
                    self.write(_relation(getattr(node, attr)), run)
        self.walk_attrs(node, ctes, run, skip=(target,) if target else ())

    def stored_code(self, node: Any, ctes: Ctes, run: bool) -> None:
        """CREATE POLICY / RULE / TRIGGER: the target is written, the rest runs later."""
        kind, category = kind_of(node)
        self.kind(kind, run, category)
        attr = "table" if isinstance(node, ast.CreatePolicyStmt) else "relation"
        rv = getattr(node, attr)
        if isinstance(rv, ast.RangeVar):
            self.write(_relation(rv), run)
        if isinstance(node, ast.CreateTrigStmt) and node.funcname:
            # The trigger function runs on every triggering row from now on.
            self.f.functions.add(names(node.funcname)[-1].lower())
        self.walk_attrs(node, ctes, False, skip=(attr,))

    def comment(self, node: ast.CommentStmt, ctes: Ctes, run: bool) -> None:
        self.kind("comment", run)
        obj: Any = node.object  # a name list for relations and columns
        if isinstance(obj, tuple):
            parts = names(obj)
            if node.objtype in _RELATION_OBJECTS:
                rel = _relation_of_names(parts)
            elif node.objtype in _ON_RELATION_OBJECTS:
                rel = _relation_of_names(parts[:-1])
            else:
                rel = None
            if rel is not None:
                self.write(rel, run)

    def rename(self, node: ast.RenameStmt, ctes: Ctes, run: bool) -> None:
        self.kind("rename", run)
        if node.renameType == enums.ObjectType.OBJECT_ROLE:
            self.kind("rename", run, Category.PRIVILEGE)
            self.flag("role_ddl", run)
        if node.relation is not None:
            self.write(_relation(node.relation), run)

    def create_schema(self, node: ast.CreateSchemaStmt, ctes: Ctes, run: bool) -> None:
        self.kind("create_schema", run)
        for element in node.schemaElts or ():
            self.walk(element, ctes, run)

    def maintenance(self, node: Any, ctes: Ctes, run: bool) -> None:
        """VACUUM/ANALYZE/CLUSTER/REFRESH: rewrite or sample whole tables."""
        kind, _ = kind_of(node)
        self.kind(kind, run)
        if isinstance(node, ast.VacuumStmt):
            for rel in node.rels or ():
                if isinstance(rel, ast.VacuumRelation) and rel.relation is not None:
                    if node.is_vacuumcmd:
                        self.write(_relation(rel.relation), run)
                    else:
                        self.read(_relation(rel.relation))
        elif node.relation is not None:
            self.write(_relation(node.relation), run)

    def lock(self, node: ast.LockStmt, ctes: Ctes, run: bool) -> None:
        self.kind("lock", run)
        for rv in node.relations or ():
            self.read(_relation(rv))

    # -- privileges -------------------------------------------------------------------

    def grant(self, node: ast.GrantStmt, ctes: Ctes, run: bool) -> None:
        kind = "grant" if node.is_grant else "revoke"
        self.kind(kind, run)
        self.flag(kind, run)
        for obj in node.objects or ():
            if isinstance(obj, ast.RangeVar):
                self.write(_relation(obj), run)  # its ACL changes

    def grant_role(self, node: ast.GrantRoleStmt, ctes: Ctes, run: bool) -> None:
        kind = "grant" if node.is_grant else "revoke"
        self.kind(kind, run)
        self.flag(kind, run)

    def role(self, node: Any, ctes: Ctes, run: bool) -> None:
        kind, _ = kind_of(node)
        self.kind(kind, run)
        self.flag("role_ddl", run)
        if isinstance(node, ast.DropRoleStmt) and run:
            self.f.dropped.add("role")
        if isinstance(node, ast.AlterRoleSetStmt):
            self.stored_setting(node.setstmt, run)

    def stored_setting(self, setstmt: ast.VariableSetStmt | None, run: bool) -> None:
        """ALTER ROLE/DATABASE/FUNCTION ... SET, ALTER SYSTEM: a setting for later."""
        if setstmt is None:
            return
        self.f.literal_sensitive = True
        name = (setstmt.name or "").lower()
        # Recorded even when not run now: the setting takes effect later, unseen.
        if name in ROLE_SETTINGS:
            self.f.flags.add("set_role")
        if name in LEXING_SETTINGS:
            self.f.flags.add("unsafe_setting")

    def alter_system(self, node: ast.AlterSystemStmt, ctes: Ctes, run: bool) -> None:
        self.kind("alter_system", run)
        self.flag("alter_system", run)
        self.stored_setting(node.setstmt, run)

    def alter_database_set(self, node: ast.AlterDatabaseSetStmt, ctes: Ctes, run: bool) -> None:
        self.kind("alter_other", run)
        self.stored_setting(node.setstmt, run)

    # -- session ------------------------------------------------------------------------

    def set(self, node: ast.VariableSetStmt, ctes: Ctes, run: bool) -> None:
        if node is not self.top:  # CREATE/ALTER FUNCTION ... SET x = y: applies later
            self.stored_setting(node, run)
            return
        kind, category = kind_of(node)
        self.kind(kind, run, category)
        self.f.literal_sensitive = True
        if not run:
            return
        self.f.set_param = set_value(node)
        self.f.set_local = bool(node.is_local)
        name = (node.name or "").lower()
        assigns = node.kind in (_VSK.VAR_SET_VALUE, _VSK.VAR_SET_CURRENT)
        if name == "role":
            self.flag("set_role" if assigns else "reset_role")
        elif name == "session_authorization":
            self.flag("set_session_authorization" if assigns else "reset_role")
        elif node.kind == _VSK.VAR_RESET_ALL:
            self.flag("reset_role")
        # RESET ALL returns the lexing settings to their configured defaults: not flagged.
        if name in LEXING_SETTINGS:
            self.flag("unsafe_setting")

    def discard(self, node: ast.DiscardStmt, ctes: Ctes, run: bool) -> None:
        self.kind("discard", run)
        if node.target == enums.DiscardMode.DISCARD_ALL:
            self.flag("reset_role", run)  # DISCARD ALL includes RESET ALL

    def listen(self, node: ast.Node, ctes: Ctes, run: bool) -> None:
        kind, _ = kind_of(node)
        self.kind(kind, run)
        self.f.literal_sensitive = True
        if isinstance(node, ast.ListenStmt):
            self.flag("listen", run)
        if isinstance(node, ast.NotifyStmt) and node.payload is not None:
            self.flag("notify_payload", run)

    def load(self, node: ast.LoadStmt, ctes: Ctes, run: bool) -> None:
        self.kind("load", run)
        self.f.literal_sensitive = True  # the library file name

    def return_stmt(self, node: ast.ReturnStmt, ctes: Ctes, run: bool) -> None:
        self.walk(node.returnval, ctes, run)  # RETURN expr of a SQL-standard function body

    # -- code --------------------------------------------------------------------------

    def code(self, node: Any, ctes: Ctes, run: bool) -> None:
        """DO, CALL, CREATE FUNCTION/PROCEDURE: bodies the analyzer cannot see into."""
        kind, _ = kind_of(node)
        self.kind(kind, run)
        self.flag("dynamic_sql", run)
        self.f.literal_sensitive = True  # the body is a string literal
        if isinstance(node, ast.CallStmt):
            self.walk(node.funccall, ctes, run)
        elif isinstance(node, ast.CreateFunctionStmt):
            # BEGIN ATOMIC bodies, parameter DEFAULTs and SET clauses apply later.
            self.walk_attrs(node, ctes, False)

    def event_trigger(self, node: ast.CreateEventTrigStmt, ctes: Ctes, run: bool) -> None:
        self.kind("create_trigger", run)
        if node.funcname:  # runs on every matching DDL command from now on
            self.f.functions.add(names(node.funcname)[-1].lower())


_EXPRESSIONS: dict[type[ast.Node], _Handler] = {
    ast.RangeVar: _Walker.range_var,
    ast.FuncCall: _Walker.func_call,
    ast.TypeCast: _Walker.type_cast,
    ast.CurrentOfExpr: _Walker.current_of,
    ast.LockingClause: _Walker.locking_clause,
}

_STATEMENTS: dict[type[ast.Node], _Handler] = {
    ast.SelectStmt: _Walker.select,
    ast.InsertStmt: _Walker.insert,
    ast.UpdateStmt: _Walker.update,
    ast.DeleteStmt: _Walker.delete,
    ast.MergeStmt: _Walker.merge,
    ast.ExplainStmt: _Walker.explain,
    ast.PrepareStmt: _Walker.prepare,
    ast.ExecuteStmt: _Walker.execute,
    ast.DeallocateStmt: _Walker.deallocate,
    ast.DeclareCursorStmt: _Walker.declare,
    ast.FetchStmt: _Walker.fetch,
    ast.ClosePortalStmt: _Walker.close,
    ast.CreateTableAsStmt: _Walker.create_table_as,
    ast.CopyStmt: _Walker.copy,
    ast.CreateStmt: _Walker.create_table,
    ast.CreateForeignTableStmt: _Walker.create_foreign_table,
    ast.ViewStmt: _Walker.view,
    ast.IndexStmt: _Walker.index,
    ast.ReindexStmt: _Walker.reindex,
    ast.AlterTableStmt: _Walker.alter_table,
    ast.DropStmt: _Walker.drop,
    ast.DropdbStmt: _Walker.drop_other,
    ast.DropOwnedStmt: _Walker.drop_other,
    ast.DropSubscriptionStmt: _Walker.drop_other,
    ast.DropTableSpaceStmt: _Walker.drop_other,
    ast.DropUserMappingStmt: _Walker.drop_other,
    ast.TruncateStmt: _Walker.truncate,
    ast.CreateSeqStmt: _Walker.relation_target,
    ast.AlterSeqStmt: _Walker.relation_target,
    ast.AlterObjectSchemaStmt: _Walker.relation_target,
    ast.AlterOwnerStmt: _Walker.relation_target,
    ast.CreatePolicyStmt: _Walker.stored_code,
    ast.AlterPolicyStmt: _Walker.stored_code,
    ast.RuleStmt: _Walker.stored_code,
    ast.CreateTrigStmt: _Walker.stored_code,
    ast.CreateEventTrigStmt: _Walker.event_trigger,
    ast.CommentStmt: _Walker.comment,
    ast.RenameStmt: _Walker.rename,
    ast.CreateSchemaStmt: _Walker.create_schema,
    ast.VacuumStmt: _Walker.maintenance,
    ast.ClusterStmt: _Walker.maintenance,
    ast.RefreshMatViewStmt: _Walker.maintenance,
    ast.LockStmt: _Walker.lock,
    ast.GrantStmt: _Walker.grant,
    ast.GrantRoleStmt: _Walker.grant_role,
    ast.CreateRoleStmt: _Walker.role,
    ast.AlterRoleStmt: _Walker.role,
    ast.AlterRoleSetStmt: _Walker.role,
    ast.DropRoleStmt: _Walker.role,
    ast.AlterSystemStmt: _Walker.alter_system,
    ast.AlterDatabaseSetStmt: _Walker.alter_database_set,
    ast.VariableSetStmt: _Walker.set,
    ast.DiscardStmt: _Walker.discard,
    ast.ListenStmt: _Walker.listen,
    ast.UnlistenStmt: _Walker.listen,
    ast.NotifyStmt: _Walker.listen,
    ast.LoadStmt: _Walker.load,
    ast.DoStmt: _Walker.code,
    ast.CallStmt: _Walker.code,
    ast.CreateFunctionStmt: _Walker.code,
    ast.ReturnStmt: _Walker.return_stmt,
}

# What a top-level statement returns rows for (the rest return a command tag only).
_ROW_RETURNING = (ast.VariableShowStmt, ast.ExplainStmt, ast.ExecuteStmt, ast.CallStmt)


def _returns_rows(node: ast.Node) -> bool:
    if isinstance(node, ast.SelectStmt):
        return node.intoClause is None
    if isinstance(node, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt):
        return node.returningClause is not None
    if isinstance(node, ast.FetchStmt):
        return not node.ismove
    # EXECUTE's result depends on the prepared statement: assume rows. CALL returns a
    # row when the procedure has OUT parameters.
    return isinstance(node, _ROW_RETURNING)


def statement_facts(node: ast.Node) -> tuple[Statement, bool]:
    """The `Statement` for one top-level node, and whether its facts read literal values."""
    walker = _Walker(node)
    walker.statement(node, frozenset(), True)
    f = walker.f
    kind, category = kind_of(node)
    f.kinds.add(kind)
    f.categories.add(category)
    if kind == "other":
        f.unanalyzed.append(f"statement type {type(node).__name__} is not analyzed")
    unanalyzed = "; ".join(dict.fromkeys(f.unanalyzed)) or None
    stmt = Statement(
        kind=kind,
        category=category,
        kinds=frozenset(f.kinds),
        categories=frozenset(f.categories),
        reads=frozenset(f.reads),
        writes=frozenset(f.writes),
        functions=frozenset(f.functions),
        unfiltered_writes=frozenset(f.unfiltered),
        flags=frozenset(f.flags),
        dropped=frozenset(f.dropped),
        set_param=f.set_param,
        set_local=f.set_local,
        prepare_name=f.prepare_name,
        execute_name=f.execute_name,
        deallocate_name=f.deallocate_name,
        cursor_name=f.cursor_name,
        returns_rows=_returns_rows(node),
        fully_analyzed=unanalyzed is None,
        unanalyzed_reason=unanalyzed,
        node=node,
    )
    return stmt, f.literal_sensitive or unanalyzed is not None
