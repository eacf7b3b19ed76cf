"""The guard in front of the AI layer's free SQL: one read-only SELECT over the `analytics` views.

The statement is parsed by PostgreSQL's own parser (libpg_query, through pglast) and its tree is
checked: a single SELECT, no locking or SELECT INTO, no data-modifying CTE, every relation an
`analytics` view (or a CTE of the statement), every function on an allowlist, no parameters. What
runs is the statement printed back from the checked tree, never the text that was sent, so nothing
the check did not see reaches the server. The database still enforces the rest — the tenant's rows
(row-level security), the level's views (grants), a read-only role with timeouts — so this guard
makes refusals clear and keeps out what grants alone allow (pg_sleep, set_config, current_setting,
the catalogs). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql, parser
from pglast.stream import RawStream

from projections.errors import ProjectionError

ALLOWED_SCHEMA = "analytics"
MAX_SQL_CHARS = 20_000
# Functions a revenue question needs: aggregates, windows, dates, numbers, text. Nothing that sleeps,
# reads settings or files, writes, or makes rows out of thin air (generate_series).
ALLOWED_FUNCTIONS = frozenset({
    # aggregates
    "count", "sum", "avg", "min", "max", "bool_and", "bool_or", "every", "string_agg", "array_agg",
    "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "percentile_cont",
    "percentile_disc", "mode", "corr",
    # windows
    "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
    "first_value", "last_value", "nth_value",
    # dates and times
    "date_trunc", "date_part", "extract", "date_bin", "make_date", "age", "to_char", "to_date", "to_timestamp",
    "now", "timezone", "justify_days", "justify_interval", "make_interval",
    # numbers
    "round", "abs", "ceil", "ceiling", "floor", "trunc", "div", "mod", "sign", "power", "sqrt",
    # text
    "lower", "upper", "length", "char_length", "substring", "substr", "split_part", "concat", "concat_ws",
    "left", "right", "trim", "btrim", "ltrim", "rtrim", "replace", "position", "starts_with", "format",
})
# Statement and clause nodes that make a SELECT do more than read.
_REFUSED_NODES: dict[type[Any], str] = {
    ast.InsertStmt: "INSERT", ast.UpdateStmt: "UPDATE", ast.DeleteStmt: "DELETE", ast.MergeStmt: "MERGE",
    ast.IntoClause: "SELECT INTO", ast.LockingClause: "FOR UPDATE/SHARE", ast.RangeTableFunc: "XMLTABLE",
    ast.ParamRef: "parameters ($1); write the values into the query",
}


class SqlRefusedError(ProjectionError):
    """The SQL was refused before it ran; the message says why and what is allowed."""


@dataclass(frozen=True)
class CheckedSelect:
    """A SELECT that passed the guard."""

    sql: str  # printed back from the checked tree: this is what runs
    fingerprint: str  # libpg_query's fingerprint: the same for the same query shape, whatever its literals
    normalized: str  # literals replaced by $n: safe to log


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
    _check_tree(statement)
    printed = RawStream()(statement)
    return CheckedSelect(sql=printed, fingerprint=parser.fingerprint(printed), normalized=_normalized(printed))


def _normalized(sql: str) -> str:
    try:
        return str(parser.normalize(sql))
    except parser.ParseError:  # pragma: no cover - printed SQL always parses
        return "<unprintable>"


def _check_tree(node: Any, ctes: frozenset[str] = frozenset()) -> None:
    """Walks the whole tree (subqueries, CTEs, expressions) and raises at the first refused node.

    A CTE name counts only inside the SELECT that defines it: outside, an unqualified name would
    resolve through the search path (to pg_catalog.pg_roles, say), so it is refused there.
    """
    if isinstance(node, (list, tuple)):
        for item in node:
            _check_tree(item, ctes)
        return
    if not isinstance(node, ast.Node):
        return
    refused = _REFUSED_NODES.get(type(node))
    if refused is not None:
        raise SqlRefusedError(f"not allowed in a read-only query: {refused}")
    if isinstance(node, ast.SelectStmt) and node.withClause is not None:
        ctes = ctes | {cte.ctename for cte in node.withClause.ctes or ()}
    if isinstance(node, ast.RangeVar):
        _check_relation(node, ctes)
    elif isinstance(node, ast.FuncCall):
        _check_function(node)
    elif isinstance(node, ast.TypeCast):
        names = [n.sval for n in (node.typeName.names if node.typeName else None) or ()]
        if names and names[-1].lower().startswith("reg"):
            raise SqlRefusedError(f"casts to {names[-1]} look into the catalogs and are not allowed")
    for attribute in node:
        _check_tree(getattr(node, attribute), ctes)


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
