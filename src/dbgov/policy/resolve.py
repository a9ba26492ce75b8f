"""Which tables a statement means: names resolved against the session's search_path.

Policy speaks in schema.table, the analyzer reports names as written. PostgreSQL
resolves an unqualified name to the first schema on the search_path that has it,
and looks in pg_catalog first unless the path lists pg_catalog explicitly. The
proxy has no catalog here, so it cannot know which schemas have the table; an
unqualified name therefore resolves to every schema it *could* mean
("candidates"), and the engine is strict in both directions:

- a grant or an allowing rule must cover every candidate;
- a denying rule, a guardrail or a mask matches if any candidate matches.

With the default path (public) a name has exactly one candidate, so this only
costs anything when a session puts several schemas on its path; then qualifying
the name is the fix. `$user` entries are skipped: the proxy connects upstream as
its own service role, whose schema (if any) governed tables do not live in.
Temporary tables (pg_temp, searched before everything) are never governed
tables, so ignoring them errs on the strict side.
"""

from __future__ import annotations

from dataclasses import dataclass

from dbgov.sql.model import Relation, Statement

# Relations in pg_catalog (PostgreSQL 13-17). A name here resolves to pg_catalog
# unless the path puts another schema before an explicit pg_catalog entry.
PG_CATALOG_RELATIONS = frozenset(
    {
        # tables
        "pg_aggregate",
        "pg_am",
        "pg_amop",
        "pg_amproc",
        "pg_attrdef",
        "pg_attribute",
        "pg_auth_members",
        "pg_authid",
        "pg_cast",
        "pg_class",
        "pg_collation",
        "pg_constraint",
        "pg_conversion",
        "pg_database",
        "pg_db_role_setting",
        "pg_default_acl",
        "pg_depend",
        "pg_description",
        "pg_enum",
        "pg_event_trigger",
        "pg_extension",
        "pg_foreign_data_wrapper",
        "pg_foreign_server",
        "pg_foreign_table",
        "pg_index",
        "pg_inherits",
        "pg_init_privs",
        "pg_language",
        "pg_largeobject",
        "pg_largeobject_metadata",
        "pg_namespace",
        "pg_opclass",
        "pg_operator",
        "pg_opfamily",
        "pg_parameter_acl",
        "pg_partitioned_table",
        "pg_policy",
        "pg_proc",
        "pg_publication",
        "pg_publication_namespace",
        "pg_publication_rel",
        "pg_range",
        "pg_replication_origin",
        "pg_rewrite",
        "pg_seclabel",
        "pg_sequence",
        "pg_shdepend",
        "pg_shdescription",
        "pg_shseclabel",
        "pg_statistic",
        "pg_statistic_ext",
        "pg_statistic_ext_data",
        "pg_subscription",
        "pg_subscription_rel",
        "pg_tablespace",
        "pg_transform",
        "pg_trigger",
        "pg_ts_config",
        "pg_ts_config_map",
        "pg_ts_dict",
        "pg_ts_parser",
        "pg_ts_template",
        "pg_type",
        "pg_user_mapping",
        # views
        "pg_available_extension_versions",
        "pg_available_extensions",
        "pg_backend_memory_contexts",
        "pg_config",
        "pg_cursors",
        "pg_file_settings",
        "pg_group",
        "pg_hba_file_rules",
        "pg_ident_file_mappings",
        "pg_indexes",
        "pg_locks",
        "pg_matviews",
        "pg_policies",
        "pg_prepared_statements",
        "pg_prepared_xacts",
        "pg_publication_tables",
        "pg_replication_origin_status",
        "pg_replication_slots",
        "pg_roles",
        "pg_rules",
        "pg_seclabels",
        "pg_sequences",
        "pg_settings",
        "pg_shadow",
        "pg_shmem_allocations",
        "pg_stats",
        "pg_stats_ext",
        "pg_stats_ext_exprs",
        "pg_tables",
        "pg_timezone_abbrevs",
        "pg_timezone_names",
        "pg_user",
        "pg_user_mappings",
        "pg_views",
        "pg_wait_events",
        # statistics views
        "pg_stat_activity",
        "pg_stat_all_indexes",
        "pg_stat_all_tables",
        "pg_stat_archiver",
        "pg_stat_bgwriter",
        "pg_stat_checkpointer",
        "pg_stat_database",
        "pg_stat_database_conflicts",
        "pg_stat_gssapi",
        "pg_stat_io",
        "pg_stat_progress_analyze",
        "pg_stat_progress_basebackup",
        "pg_stat_progress_cluster",
        "pg_stat_progress_copy",
        "pg_stat_progress_create_index",
        "pg_stat_progress_vacuum",
        "pg_stat_recovery_prefetch",
        "pg_stat_replication",
        "pg_stat_replication_slots",
        "pg_stat_slru",
        "pg_stat_ssl",
        "pg_stat_subscription",
        "pg_stat_subscription_stats",
        "pg_stat_sys_indexes",
        "pg_stat_sys_tables",
        "pg_stat_user_functions",
        "pg_stat_user_indexes",
        "pg_stat_user_tables",
        "pg_stat_wal",
        "pg_stat_wal_receiver",
        "pg_stat_xact_all_tables",
        "pg_stat_xact_sys_tables",
        "pg_stat_xact_user_functions",
        "pg_stat_xact_user_tables",
        "pg_statio_all_indexes",
        "pg_statio_all_sequences",
        "pg_statio_all_tables",
        "pg_statio_sys_indexes",
        "pg_statio_sys_sequences",
        "pg_statio_sys_tables",
        "pg_statio_user_indexes",
        "pg_statio_user_sequences",
        "pg_statio_user_tables",
    }
)

SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema"})

# System relations whose rows are secrets or other people's data, not metadata:
# password hashes, user-mapping options (passwords), column statistics (most common
# values are real data values), large object contents, server config files, and
# pg_stat_activity: every proxied session shares the upstream role, so it would
# show other users' query texts, literals included.
SECRET_RELATIONS = frozenset(
    f"pg_catalog.{name}"
    for name in (
        "pg_authid",
        "pg_shadow",
        "pg_user_mapping",
        "pg_user_mappings",
        "pg_statistic",
        "pg_statistic_ext_data",
        "pg_stats",
        "pg_stats_ext",
        "pg_stats_ext_exprs",
        "pg_largeobject",
        "pg_file_settings",
        "pg_hba_file_rules",
        "pg_ident_file_mappings",
        "pg_stat_activity",
        "pg_subscription",
        "pg_db_role_setting",
    )
)


@dataclass(frozen=True, slots=True)
class Resolved:
    """A relation as written and every schema.table it may mean on this path."""

    relation: Relation
    candidates: tuple[str, ...]


def resolve(rel: Relation, search_path: tuple[str, ...]) -> Resolved:
    if rel.schema is not None:
        return Resolved(rel, (f"{rel.schema}.{rel.name}",))
    path = [s for s in search_path if s and s != "$user"]
    known_catalog = rel.name in PG_CATALOG_RELATIONS
    if "pg_catalog" not in path:
        # Implicitly searched first; a catalog name always stops there.
        if known_catalog:
            return Resolved(rel, (f"pg_catalog.{rel.name}",))
        path.insert(0, "pg_catalog")
    out: list[str] = []
    for schema in path:
        if schema == "pg_catalog":
            if known_catalog:
                out.append(f"pg_catalog.{rel.name}")
                break
            # A pg_* name missing from our list may still be a catalog relation.
            if rel.name.startswith("pg_"):
                out.append(f"pg_catalog.{rel.name}")
            continue
        out.append(f"{schema}.{rel.name}")
    if not out:  # an empty search_path: PostgreSQL finds nothing; be strict anyway
        out.append(f"public.{rel.name}")
    return Resolved(rel, tuple(dict.fromkeys(out)))


def resolve_any(rel: Relation, paths: tuple[tuple[str, ...], ...]) -> Resolved:
    """Candidates under any of several paths (see `parse_search_path` for why several)."""
    if len(paths) == 1:
        return resolve(rel, paths[0])
    names = (c for p in paths for c in resolve(rel, p).candidates)
    return Resolved(rel, tuple(dict.fromkeys(names)))


# What RESET search_path / RESET ALL / DISCARD ALL return to: PostgreSQL's default.
DEFAULT_SEARCH_PATH = ("$user", "public")


def parse_search_path(value: str) -> tuple[str, ...] | None:
    """The schemas of a SET search_path value as the analyzer renders it (`a, "B"`).

    None when the value is not a plain list (a parameter, FROM CURRENT): the
    caller must then treat the path as unknown. Within one multi-statement query
    the engine resolves later statements under every path the query may have set
    (the old one stays possible: a ROLLBACK or a failed COMMIT restores it).
    """
    if value == "DEFAULT":
        return DEFAULT_SEARCH_PATH
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " \t":
            i += 1
        if i < n and value[i] == '"':
            j, name = i + 1, []
            while j < n:
                if value[j] == '"':
                    if j + 1 < n and value[j + 1] == '"':
                        name.append('"')
                        j += 2
                        continue
                    break
                name.append(value[j])
                j += 1
            if j >= n:
                return None
            out.append("".join(name))
            i = j + 1
        else:
            j = i
            while j < n and value[j] != ",":
                j += 1
            word = value[i:j].strip()
            if not word or word == "?" or not all(c.isalnum() or c in "_$" for c in word):
                return None
            out.append(word.lower())
            i = j
        while i < n and value[i] in " \t":
            i += 1
        if i < n:
            if value[i] != ",":
                return None
            i += 1
    return tuple(out)


@dataclass(frozen=True, slots=True)
class StatementView:
    """One statement with its relations resolved for the search_path(s) in effect."""

    stmt: Statement
    paths: tuple[tuple[str, ...], ...]
    reads: tuple[Resolved, ...]
    writes: tuple[Resolved, ...]

    @classmethod
    def of(cls, stmt: Statement, paths: tuple[tuple[str, ...], ...]) -> StatementView:
        return cls(
            stmt,
            paths,
            tuple(resolve_any(r, paths) for r in sorted(stmt.reads, key=str)),
            tuple(resolve_any(r, paths) for r in sorted(stmt.writes, key=str)),
        )

    def read_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for r in self.reads for c in r.candidates))

    def write_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for r in self.writes for c in r.candidates))

    def table_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.read_names(), *self.write_names())))

    def unfiltered_names(self) -> tuple[str, ...]:
        return tuple(
            dict.fromkeys(
                c
                for r in sorted(self.stmt.unfiltered_writes, key=str)
                for c in resolve_any(r, self.paths).candidates
            )
        )
