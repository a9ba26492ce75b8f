"""Statement kinds: which parse-tree node is which kind of statement.

Policy speaks in kinds ("delete", "drop", "grant") and categories (read, write,
ddl, ...). This module is the single table that maps a pglast statement node to
both. Nodes that need a look inside (SELECT INTO, SET ROLE, COMMIT vs ROLLBACK,
...) are decided by `kind_of()`; any node type missing here is "other" in the
UTILITY category and the analyzer marks it not fully analyzed (fail closed).
"""

from __future__ import annotations

from pglast import ast, enums

from dbgov.sql.model import Category

# Every kind the analyzer can emit, with the category it belongs to. A statement's
# `categories` are the categories of its `kinds`, except that SET/RESET of the role
# or session authorization is PRIVILEGE (see `kind_of`).
CATEGORY_OF_KIND: dict[str, Category] = {
    # reads and writes
    "select": Category.READ,
    "insert": Category.WRITE,
    "update": Category.WRITE,
    "delete": Category.WRITE,
    "merge": Category.WRITE,
    "copy_from": Category.WRITE,
    "copy_to": Category.READ,
    "explain": Category.READ,
    "fetch": Category.READ,
    "move": Category.READ,
    # schema objects
    "create_table": Category.DDL,
    "create_table_as": Category.DDL,
    "create_matview": Category.DDL,
    "create_index": Category.DDL,
    "create_view": Category.DDL,
    "create_schema": Category.DDL,
    "create_sequence": Category.DDL,
    "create_extension": Category.DDL,
    "create_trigger": Category.DDL,
    "create_type": Category.DDL,
    "create_domain": Category.DDL,
    "create_policy": Category.DDL,
    "create_rule": Category.DDL,
    "create_database": Category.DDL,
    "create_tablespace": Category.DDL,
    "create_foreign_table": Category.DDL,
    "create_other": Category.DDL,
    "alter_table": Category.DDL,
    "alter_other": Category.DDL,
    "drop": Category.DDL,
    "truncate": Category.DDL,
    "comment": Category.DDL,
    "security_label": Category.DDL,
    "rename": Category.DDL,
    # privileges
    "create_role": Category.PRIVILEGE,
    "alter_role": Category.PRIVILEGE,
    "drop_role": Category.PRIVILEGE,
    "grant": Category.PRIVILEGE,
    "revoke": Category.PRIVILEGE,
    "alter_system": Category.PRIVILEGE,
    "alter_default_privileges": Category.PRIVILEGE,
    "reassign_owned": Category.PRIVILEGE,
    # code
    "do": Category.PROCEDURAL,
    "call": Category.PROCEDURAL,
    "create_function": Category.PROCEDURAL,
    "create_procedure": Category.PROCEDURAL,
    # session state
    "set": Category.SESSION,
    "reset": Category.SESSION,
    "show": Category.SESSION,
    "discard": Category.SESSION,
    "prepare": Category.SESSION,
    "execute": Category.SESSION,
    "deallocate": Category.SESSION,
    "declare": Category.SESSION,
    "close": Category.SESSION,
    "listen": Category.SESSION,
    "unlisten": Category.SESSION,
    "notify": Category.SESSION,
    "set_constraints": Category.SESSION,
    # transactions
    "begin": Category.TRANSACTION,
    "commit": Category.TRANSACTION,
    "rollback": Category.TRANSACTION,
    "rollback_to": Category.TRANSACTION,
    "savepoint": Category.TRANSACTION,
    "release": Category.TRANSACTION,
    "prepare_transaction": Category.TRANSACTION,
    "commit_prepared": Category.TRANSACTION,
    "rollback_prepared": Category.TRANSACTION,
    # maintenance and the rest
    "lock": Category.UTILITY,
    "vacuum": Category.UTILITY,
    "analyze": Category.UTILITY,
    "checkpoint": Category.UTILITY,
    "refresh_matview": Category.UTILITY,
    "reindex": Category.UTILITY,
    "cluster": Category.UTILITY,
    "load": Category.UTILITY,
    "other": Category.UTILITY,
}

# Node types whose kind needs no look inside (the others are decided in `kind_of`).
NODE_KINDS: dict[type[ast.Node], str] = {
    ast.InsertStmt: "insert",
    ast.UpdateStmt: "update",
    ast.DeleteStmt: "delete",
    ast.MergeStmt: "merge",
    ast.CreateStmt: "create_table",
    ast.IndexStmt: "create_index",
    ast.ViewStmt: "create_view",
    ast.CreateSchemaStmt: "create_schema",
    ast.CreateSeqStmt: "create_sequence",
    ast.CreateExtensionStmt: "create_extension",
    ast.CreateTrigStmt: "create_trigger",
    ast.CreateEventTrigStmt: "create_trigger",
    ast.CompositeTypeStmt: "create_type",
    ast.CreateEnumStmt: "create_type",
    ast.CreateRangeStmt: "create_type",
    ast.CreateDomainStmt: "create_domain",
    ast.CreatePolicyStmt: "create_policy",
    ast.RuleStmt: "create_rule",
    ast.CreatedbStmt: "create_database",
    ast.CreateTableSpaceStmt: "create_tablespace",
    ast.CreateForeignTableStmt: "create_foreign_table",
    ast.DefineStmt: "create_other",
    ast.CreateCastStmt: "create_other",
    ast.CreateConversionStmt: "create_other",
    ast.CreateOpClassStmt: "create_other",
    ast.CreateOpFamilyStmt: "create_other",
    ast.CreateFdwStmt: "create_other",
    ast.CreateForeignServerStmt: "create_other",
    ast.CreateUserMappingStmt: "create_other",
    ast.CreatePublicationStmt: "create_other",
    ast.CreateSubscriptionStmt: "create_other",
    ast.CreatePLangStmt: "create_other",
    ast.CreateAmStmt: "create_other",
    ast.CreateTransformStmt: "create_other",
    ast.CreateStatsStmt: "create_other",
    ast.ImportForeignSchemaStmt: "create_other",
    ast.AlterCollationStmt: "alter_other",
    ast.AlterDatabaseRefreshCollStmt: "alter_other",
    ast.AlterDatabaseSetStmt: "alter_other",
    ast.AlterDatabaseStmt: "alter_other",
    ast.AlterDomainStmt: "alter_other",
    ast.AlterEnumStmt: "alter_other",
    ast.AlterEventTrigStmt: "alter_other",
    ast.AlterExtensionContentsStmt: "alter_other",
    ast.AlterExtensionStmt: "alter_other",
    ast.AlterFdwStmt: "alter_other",
    ast.AlterForeignServerStmt: "alter_other",
    ast.AlterFunctionStmt: "alter_other",
    ast.AlterObjectDependsStmt: "alter_other",
    ast.AlterObjectSchemaStmt: "alter_other",
    ast.AlterOpFamilyStmt: "alter_other",
    ast.AlterOperatorStmt: "alter_other",
    ast.AlterOwnerStmt: "alter_other",
    ast.AlterPolicyStmt: "alter_other",
    ast.AlterPublicationStmt: "alter_other",
    ast.AlterSeqStmt: "alter_other",
    ast.AlterStatsStmt: "alter_other",
    ast.AlterSubscriptionStmt: "alter_other",
    ast.AlterTSConfigurationStmt: "alter_other",
    ast.AlterTSDictionaryStmt: "alter_other",
    ast.AlterTableMoveAllStmt: "alter_other",
    ast.AlterTableSpaceOptionsStmt: "alter_other",
    ast.AlterTypeStmt: "alter_other",
    ast.AlterUserMappingStmt: "alter_other",
    ast.DropStmt: "drop",
    ast.DropdbStmt: "drop",
    ast.DropOwnedStmt: "drop",
    ast.DropSubscriptionStmt: "drop",
    ast.DropTableSpaceStmt: "drop",
    ast.DropUserMappingStmt: "drop",
    ast.TruncateStmt: "truncate",
    ast.CommentStmt: "comment",
    ast.SecLabelStmt: "security_label",
    ast.RenameStmt: "rename",
    ast.CreateRoleStmt: "create_role",
    ast.AlterRoleStmt: "alter_role",
    ast.AlterRoleSetStmt: "alter_role",
    ast.DropRoleStmt: "drop_role",
    ast.AlterSystemStmt: "alter_system",
    ast.AlterDefaultPrivilegesStmt: "alter_default_privileges",
    ast.ReassignOwnedStmt: "reassign_owned",
    ast.DoStmt: "do",
    ast.CallStmt: "call",
    ast.VariableShowStmt: "show",
    ast.DiscardStmt: "discard",
    ast.PrepareStmt: "prepare",
    ast.ExecuteStmt: "execute",
    ast.DeallocateStmt: "deallocate",
    ast.DeclareCursorStmt: "declare",
    ast.ClosePortalStmt: "close",
    ast.ListenStmt: "listen",
    ast.UnlistenStmt: "unlisten",
    ast.NotifyStmt: "notify",
    ast.ConstraintsSetStmt: "set_constraints",
    ast.ExplainStmt: "explain",
    ast.LockStmt: "lock",
    ast.CheckPointStmt: "checkpoint",
    ast.RefreshMatViewStmt: "refresh_matview",
    ast.ReindexStmt: "reindex",
    ast.ClusterStmt: "cluster",
    ast.LoadStmt: "load",
}

_TRANSACTION: dict[enums.TransactionStmtKind, str] = {
    enums.TransactionStmtKind.TRANS_STMT_BEGIN: "begin",
    enums.TransactionStmtKind.TRANS_STMT_START: "begin",
    enums.TransactionStmtKind.TRANS_STMT_COMMIT: "commit",
    enums.TransactionStmtKind.TRANS_STMT_ROLLBACK: "rollback",
    enums.TransactionStmtKind.TRANS_STMT_SAVEPOINT: "savepoint",
    enums.TransactionStmtKind.TRANS_STMT_RELEASE: "release",
    enums.TransactionStmtKind.TRANS_STMT_ROLLBACK_TO: "rollback_to",
    enums.TransactionStmtKind.TRANS_STMT_PREPARE: "prepare_transaction",
    enums.TransactionStmtKind.TRANS_STMT_COMMIT_PREPARED: "commit_prepared",
    enums.TransactionStmtKind.TRANS_STMT_ROLLBACK_PREPARED: "rollback_prepared",
}

# SET/RESET of these changes who the session is: PRIVILEGE, not SESSION.
ROLE_SETTINGS = frozenset({"role", "session_authorization"})

_RESETS = (enums.VariableSetKind.VAR_RESET, enums.VariableSetKind.VAR_RESET_ALL)


def kind_of(node: ast.Node) -> tuple[str, Category]:
    """The kind and category of one statement node; ("other", UTILITY) if unknown."""
    kind = NODE_KINDS.get(type(node))
    if kind is not None:
        return kind, CATEGORY_OF_KIND[kind]
    if isinstance(node, ast.SelectStmt):
        kind = "create_table_as" if node.intoClause is not None else "select"
    elif isinstance(node, ast.CreateTableAsStmt):
        is_matview = node.objtype == enums.ObjectType.OBJECT_MATVIEW
        kind = "create_matview" if is_matview else "create_table_as"
    elif isinstance(node, ast.AlterTableStmt):
        # ALTER INDEX / VIEW / SEQUENCE / MATERIALIZED VIEW share the node.
        tables = (enums.ObjectType.OBJECT_TABLE, enums.ObjectType.OBJECT_FOREIGN_TABLE)
        kind = "alter_table" if node.objtype in tables else "alter_other"
    elif isinstance(node, ast.CopyStmt):
        kind = "copy_from" if node.is_from else "copy_to"
    elif isinstance(node, ast.CreateFunctionStmt):
        kind = "create_procedure" if node.is_procedure else "create_function"
    elif isinstance(node, ast.FetchStmt):
        kind = "move" if node.ismove else "fetch"
    elif isinstance(node, ast.VacuumStmt):
        kind = "vacuum" if node.is_vacuumcmd else "analyze"
    elif isinstance(node, ast.GrantStmt | ast.GrantRoleStmt):
        kind = "grant" if node.is_grant else "revoke"
    elif isinstance(node, ast.TransactionStmt):
        kind = _TRANSACTION.get(node.kind, "other") if node.kind is not None else "other"
    elif isinstance(node, ast.VariableSetStmt):
        kind = "reset" if node.kind in _RESETS else "set"
        if (node.name or "").lower() in ROLE_SETTINGS:
            return kind, Category.PRIVILEGE
    else:
        kind = "other"
    return kind, CATEGORY_OF_KIND[kind]


def is_known(node: ast.Node) -> bool:
    """True when `kind_of` recognises the node (anything else fails closed)."""
    return kind_of(node)[0] != "other"
