"""The guard in front of the AI layer's free SQL: one read-only SELECT over the `analytics` views.

The statement is parsed by PostgreSQL's own parser (libpg_query, through pglast) and its tree is
checked: a single SELECT, no locking or SELECT INTO, no data-modifying CTE, every relation an
`analytics` view (or a CTE of the statement), every function on an allowlist, no parameters. What
runs is the statement printed back from the checked tree, never the text that was sent, so nothing
the check did not see reaches the server. The database still enforces the rest — the tenant's rows
(row-level security), the level's views (grants), a read-only role with timeouts — so this guard
makes refusals clear and keeps out what grants alone allow (pg_sleep, set_config, current_setting,
the catalogs). Last, it bounds what the statement can build for one row (`sql_size`): no setting of
Postgres caps a value below 1 GB, so a query that could build more is refused before it runs. Casts are to
a few plain types only, whose operators the size rules know. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql, parser
from pglast.stream import RawStream

from projections.errors import ProjectionError
from projections.read.size_rules import CAST_TYPES, FUNCTION_SIZES
from projections.read.sql_size import ValueSizeError, max_built_bytes

ALLOWED_SCHEMA = "analytics"
MAX_SQL_CHARS = 20_000
# Functions a revenue question needs (aggregates, windows, dates, numbers, text), each with the rule for how
# large its result can be: a function without one is not allowed.
ALLOWED_FUNCTIONS = frozenset(FUNCTION_SIZES)
# The parse-tree nodes a plain SELECT is made of. Anything else (XML, SQL/JSON, DML, SELECT INTO, locking,
# parameters, table functions…) is refused by name: an allowlist, so new grammar is refused until looked at.
ALLOWED_NODES = frozenset({
    ast.SelectStmt, ast.ResTarget, ast.RangeVar, ast.Alias, ast.JoinExpr, ast.RangeSubselect, ast.RangeFunction,
    ast.WithClause, ast.CommonTableExpr, ast.ColumnRef, ast.A_Star, ast.A_Const, ast.A_Expr, ast.A_Indirection,
    ast.A_Indices, ast.A_ArrayExpr, ast.BoolExpr, ast.NullTest, ast.BooleanTest, ast.CaseExpr, ast.CaseWhen,
    ast.CoalesceExpr, ast.MinMaxExpr, ast.SubLink, ast.FuncCall, ast.TypeCast, ast.TypeName, ast.SortBy,
    ast.WindowDef, ast.GroupingSet, ast.RowExpr, ast.CollateClause, ast.SQLValueFunction, ast.String, ast.Integer,
    ast.Float, ast.Boolean, ast.BitString,
})
_NODE_NAMES = {ast.InsertStmt: "INSERT", ast.UpdateStmt: "UPDATE", ast.DeleteStmt: "DELETE", ast.MergeStmt: "MERGE",
               ast.IntoClause: "SELECT INTO", ast.LockingClause: "FOR UPDATE/SHARE",
               ast.ParamRef: "parameters ($1); write the values into the query"}
# current_user, session_user and the like name the role: only the date and time ones are allowed.
_TIME_VALUES = {"SVFOP_CURRENT_DATE", "SVFOP_CURRENT_TIME", "SVFOP_CURRENT_TIME_N", "SVFOP_CURRENT_TIMESTAMP",
                "SVFOP_CURRENT_TIMESTAMP_N", "SVFOP_LOCALTIME", "SVFOP_LOCALTIME_N", "SVFOP_LOCALTIMESTAMP",
                "SVFOP_LOCALTIMESTAMP_N"}


class SqlRefusedError(ProjectionError):
    """The SQL was refused before it ran; the message says why and what is allowed."""


@dataclass(frozen=True)
class CheckedSelect:
    """A SELECT that passed the guard."""

    sql: str  # printed back from the checked tree: this is what runs
    fingerprint: str  # libpg_query's fingerprint: the same for the same query shape, whatever its literals
    normalized: str  # literals replaced by $n: safe to log
    max_built_bytes: int  # what its values for one row can come to, at most (sql_size)


def check_select(sql: str) -> CheckedSelect:
    """Returns the checked statement; raises SqlRefusedError naming the first rule it breaks."""
    if not sql.strip():
        raise SqlRefusedError("empty query: send one SELECT over the analytics views")
    if len(sql) > MAX_SQL_CHARS:
        raise SqlRefusedError(f"the query is longer than {MAX_SQL_CHARS} characters")
    try:
        statements = parse_sql(sql)
    except parser.ParseError as exc:
        raise SqlRefusedError(f"not valid PostgreSQL: {exc}") from None
    if len(statements) != 1:
        raise SqlRefusedError(f"one statement only; this has {len(statements)}")
    statement = statements[0].stmt
    if not isinstance(statement, ast.SelectStmt):
        kind = type(statement).__name__.removesuffix("Stmt").upper()
        raise SqlRefusedError(f"only SELECT is allowed; this is {kind}")
    try:
        _check_tree(statement)
        printed = RawStream()(statement)
        built = max_built_bytes(statement)
    except RecursionError:
        raise SqlRefusedError("the query is nested too deeply; write it flatter") from None
    except ValueSizeError as exc:
        raise SqlRefusedError(str(exc)) from None
    return CheckedSelect(sql=printed, fingerprint=parser.fingerprint(printed), normalized=_normalized(printed),
                         max_built_bytes=built)


def _normalized(sql: str, limit: int = 500) -> str:
    """The statement with its literals replaced by $n, on one line and at most `limit` characters (for logs)."""
    try:
        text = str(parser.normalize(sql))
    except parser.ParseError:  # pragma: no cover - printed SQL always parses
        return "<unprintable>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _check_tree(node: Any, ctes: frozenset[str] = frozenset()) -> None:
    """Walks the whole tree (subqueries, CTEs, expressions) and raises at the first refused node.

    A CTE's name counts only where PostgreSQL resolves it to the CTE: in the SELECT that defines it and,
    within its WITH, in the CTEs after it. Anywhere else an unqualified name would resolve through the
    search path (to pg_catalog.pg_roles, say), so it is refused there.
    """
    if isinstance(node, (list, tuple)):
        for item in node:
            _check_tree(item, ctes)
        return
    if not isinstance(node, ast.Node):
        return
    if type(node) not in ALLOWED_NODES:
        name = _NODE_NAMES.get(type(node), type(node).__name__)
        raise SqlRefusedError(f"not allowed in a read-only query: {name}")
    if isinstance(node, ast.SelectStmt) and node.withClause is not None:
        ctes = _check_with(node.withClause, ctes)
        for attribute in node:
            if attribute != "withClause":
                _check_tree(getattr(node, attribute), ctes)
        return
    if isinstance(node, ast.RangeVar):
        _check_relation(node, ctes)
    elif isinstance(node, ast.FuncCall):
        _check_function(node)
    elif isinstance(node, ast.TypeName):
        _check_type(node)
    elif isinstance(node, ast.SQLValueFunction) and getattr(node.op, "name", str(node.op)) not in _TIME_VALUES:
        raise SqlRefusedError("only the date and time values (current_date, now()…) are allowed, not the role's name")
    for attribute in node:
        _check_tree(getattr(node, attribute), ctes)


def _check_with(with_clause: ast.WithClause, outer: frozenset[str]) -> frozenset[str]:
    """Checks each CTE with the names visible to it; returns the names visible to the SELECT."""
    if with_clause.recursive:
        raise SqlRefusedError("WITH RECURSIVE is not allowed: it can make rows and values without bound")
    visible = outer
    for cte in with_clause.ctes or ():
        if cte.ctename.lower().startswith("pg_"):
            raise SqlRefusedError(f"a CTE may not be named {cte.ctename!r}: pg_ names are the catalogs'")
        _check_tree(cte.ctequery, visible)
        _check_tree([c for c in (cte.aliascolnames or ())], visible)
        visible = visible | {cte.ctename}
    return visible


def _check_type(node: ast.TypeName) -> None:
    names = [n.sval for n in node.names or ()]
    if names and names[-1].lower().startswith("reg"):
        raise SqlRefusedError(f"casts to {names[-1]} look into the catalogs and are not allowed")
    if not names or names[-1].lower() not in CAST_TYPES or [n.lower() for n in names[:-1]] not in ([], ["pg_catalog"]):
        raise SqlRefusedError(f"casts to {'.'.join(names)} are not allowed; cast to text, varchar, a number "
                              "(int, bigint, numeric, float), boolean, a date, time, timestamp or interval, "
                              "or an array of those")
    if node.typmods:
        raise SqlRefusedError(f"type modifiers such as {names[-1] if names else 'the type'}(n) are not allowed; "
                              "cast to the plain type")


def _check_relation(node: ast.RangeVar, ctes: frozenset[str]) -> None:
    if node.schemaname is None and node.catalogname is None and node.relname in ctes:
        return
    if node.catalogname is None and node.schemaname == ALLOWED_SCHEMA:
        return
    name = ".".join(p for p in (node.catalogname, node.schemaname, node.relname) if p)
    raise SqlRefusedError(
        f"only the {ALLOWED_SCHEMA} views can be read; {name} is not one "
        f"(name views in full, e.g. {ALLOWED_SCHEMA}.daily_revenue; the views resource lists them)"
    )


def _check_function(node: ast.FuncCall) -> None:
    names = [n.sval.lower() for n in node.funcname or ()]
    name, schema = names[-1], names[:-1]
    if name not in ALLOWED_FUNCTIONS or schema not in ([], ["pg_catalog"]):
        raise SqlRefusedError(f"function {'.'.join(names)}() is not allowed; allowed: {', '.join(sorted(ALLOWED_FUNCTIONS))}")
