"""How much a checked SELECT can build in the database for one row: an upper bound read from its parse tree.

Postgres bounds what a query collects (sorts, hashes and CTEs spill to temp files past work_mem, and the
reader's temp_file_limit caps those) but not a value: one text, array or row may grow to 1 GB in a backend's
memory, and a value built from values built the same way (`v || v` over a CTE of `v || v`) grows
exponentially with the length of the query. The guard therefore adds up the largest size every value of one
row can reach and refuses a statement past MAX_BUILT_BYTES. Each allowed node and function has a size rule
here, and the guard allows no function without one, so the bound holds for whatever passes the guard:

- a value read from a view counts as VIEW_VALUE_BYTES (a whole row as VIEW_ROW_BYTES), a literal as five
  times its length (its binary form can be larger than its text: '{1,1}' as int8[]);
- what picks or shrinks (min, coalesce, substring, =) is at most its largest input; what joins (||,
  concat, ARRAY[…], ROW(…)) at most the sum of its inputs, doubled for arrays and rows, whose text escapes
  the quotes of their elements once more at each level;
- a number is at most NUMBER_BYTES (131,072 digits before the point, 16,383 after), which text cast to
  numeric ('1e131071') and power() reach from a few characters;
- a column of a subquery or CTE is at most the largest value that subquery outputs; a whole row, their sum.

ARRAY(SELECT …) is refused: it makes one value of every row of its subquery, bounded by nothing but the rows.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pglast import ast, enums

from projections.errors import ProjectionError
from projections.read.size_rules import (
    FIXED_BYTES,
    NUMBER_BYTES,
    cast_type,
    last_name,
    literal_size,
    size_of,
)

# What one row's values may come to. A backend per reader connection (a tenant has a few per level and mode)
# can so hold at most this much at once for the values of its query, besides what work_mem bounds.
MAX_BUILT_BYTES = 16 * 1024 * 1024
VIEW_VALUE_BYTES = 8 * 1024  # one value of an analytics view: Stripe's own texts are a few kB at most
VIEW_ROW_BYTES = 64 * 1024
_COLUMN_BYTES = 16  # what a column adds to a row besides its value: a length, or quotes and a comma


class ValueSizeError(ProjectionError):
    """The statement could build more than MAX_BUILT_BYTES for one row; the message says where."""


@dataclass(frozen=True)
class _Source:
    """A FROM item as column references see it: the largest value one of its columns holds, and its whole row."""

    name: str | None
    column: int
    row: int


def max_built_bytes(statement: ast.SelectStmt) -> int:
    """Returns how many bytes the values of one row of `statement` can reach; raises ValueSizeError past the limit.

    `statement` has passed the guard's other checks: every node and function in it is one the rules know.
    """
    sizer = _Sizer()
    sizer.select(statement, (), {})
    return sizer.built


class _Sizer:
    """Walks a statement as Postgres evaluates it, adding up the values each row builds."""

    def __init__(self) -> None:
        self.built = 0

    def select(self, node: Any, outer: tuple[_Source, ...], ctes: Mapping[str, _Source]) -> _Source:
        """Returns the statement's output as a source; CTEs see the outer scope and the CTEs before them."""
        if node.withClause is not None:
            ctes = dict(ctes)
            for cte in node.withClause.ctes or ():
                ctes[cte.ctename] = self.select(cte.ctequery, outer, ctes)
        if node.op != enums.SetOperation.SETOP_NONE:
            left, right = self.select(node.larg, outer, ctes), self.select(node.rarg, outer, ctes)
            out = _Source(None, max(left.column, right.column), max(left.row, right.row))
            self._clauses(node, (out, *outer), ctes)
            return out
        if node.valuesLists:
            rows = [[self.expr(value, outer, ctes) for value in values] for values in node.valuesLists]
            column = max(max(r, default=0) for r in rows)
            out = _Source(None, column, max(sum(r) + _COLUMN_BYTES * len(r) for r in rows))
            self._clauses(node, (out, *outer), ctes)
            return out
        sources: list[_Source] = []
        for item in node.fromClause or ():
            sources += self._from_item(item, (*sources, *outer), ctes)  # as if LATERAL: never smaller
        scope = (*sources, *outer)
        column = row = 0
        for target in node.targetList or ():
            fields = _star(target.val)
            if fields is not None:  # `*` is this level's FROM items; `t.*` may name an outer one
                expanded = _named(sources if len(fields) == 1 else scope, fields)
                column, row = max([column, *(s.column for s in expanded)]), row + sum(s.row for s in expanded)
            else:
                size = self.expr(target.val, scope, ctes)
                column, row = max(column, size), row + size + _COLUMN_BYTES
        out = _Source(None, column, row)
        self.expr(node.whereClause, scope, ctes)
        self.expr(node.havingClause, scope, ctes)
        self._clauses(node, (out, *scope), ctes)  # ORDER BY and GROUP BY may name an output column
        return out

    def _clauses(self, node: Any, scope: tuple[_Source, ...], ctes: Mapping[str, _Source]) -> None:
        for clause in (node.groupClause, node.distinctClause, node.sortClause, node.windowClause):
            for item in clause or ():
                self.expr(item, scope, ctes)
        self.expr(node.limitCount, scope, ctes)
        self.expr(node.limitOffset, scope, ctes)

    def _from_item(self, node: Any, scope: tuple[_Source, ...], ctes: Mapping[str, _Source]) -> list[_Source]:
        alias = getattr(node, "alias", None)
        name = alias.aliasname if alias is not None else None
        if isinstance(node, ast.RangeVar):
            cte = ctes.get(node.relname or "") if node.schemaname is None else None
            column, row = (cte.column, cte.row) if cte is not None else (VIEW_VALUE_BYTES, VIEW_ROW_BYTES)
            return [_Source(name or node.relname, column, row)]
        if isinstance(node, ast.RangeSubselect):
            out = self.select(node.subquery, scope, ctes)
            return [_Source(name, out.column, out.row)]
        if isinstance(node, ast.RangeFunction):
            functions = [function for function, _ in node.functions or ()]
            sizes = [self.expr(function, scope, ctes) for function in functions]
            first = functions[0]  # unaliased, the item is named after its (first) function
            name = name or (last_name(first.funcname) if isinstance(first, ast.FuncCall) else None)
            return [_Source(name, max(sizes), sum(sizes) + _COLUMN_BYTES * (len(sizes) + 1))]
        if isinstance(node, ast.JoinExpr):
            left = self._from_item(node.larg, scope, ctes)
            both = left + self._from_item(node.rarg, (*left, *scope), ctes)
            self.expr(node.quals, (*both, *scope), ctes)
            names = [a.aliasname for a in (node.alias, getattr(node, "join_using_alias", None)) if a is not None]
            whole = _Source(None, max(s.column for s in both), sum(s.row for s in both))
            return both + [_Source(n, whole.column, whole.row) for n in names]
        raise ValueSizeError(f"no size rule for {type(node).__name__}")  # pragma: no cover - the guard refuses it

    def expr(self, node: Any, scope: tuple[_Source, ...], ctes: Mapping[str, _Source]) -> int:
        """Returns the largest size the expression's value can reach, adding what it builds to the total."""
        if node is None or isinstance(node, (ast.String, ast.A_Star)):
            return 0
        if isinstance(node, (ast.CoalesceExpr, ast.MinMaxExpr)):  # COALESCE, GREATEST, LEAST: one of their inputs
            node = node.args or ()
        if isinstance(node, (list, tuple)):  # a loop, as below: one frame a level keeps deep trees within reach
            largest = 0
            for item in node:
                largest = max(largest, self.expr(item, scope, ctes))
            return largest
        if isinstance(node, ast.A_Const):
            return FIXED_BYTES if node.isnull else literal_size(node.val)
        if isinstance(node, ast.ColumnRef):
            return self._column(node, scope)
        if isinstance(node, ast.SubLink):
            return self._sublink(node, scope, ctes)
        if isinstance(node, (ast.SortBy, ast.CollateClause)):
            return self.expr(node.node if isinstance(node, ast.SortBy) else node.arg, scope, ctes)
        if isinstance(node, ast.WindowDef):
            for part in (node.partitionClause, node.orderClause, node.startOffset, node.endOffset):
                self.expr(part, scope, ctes)
            return 0
        if isinstance(node, ast.CaseExpr):
            return self._case(node, scope, ctes)
        if isinstance(node, (ast.BoolExpr, ast.NullTest, ast.BooleanTest, ast.GroupingSet, ast.SQLValueFunction)):
            for part in (getattr(node, "args", None), getattr(node, "arg", None), getattr(node, "content", None)):
                self.expr(part, scope, ctes)
            return FIXED_BYTES
        sizes: list[int] = []
        for part in self._inputs(node, scope, ctes):
            sizes.append(self.expr(part, scope, ctes))
        return self._build(node, size_of(node, sizes))

    def _inputs(self, node: Any, scope: tuple[_Source, ...], ctes: Mapping[str, _Source]) -> list[Any]:
        """A building node's inputs, in order (a FuncCall's WITHIN GROUP inputs after its arguments); sizes
        what else it evaluates (a FILTER, a window, subscripts)."""
        if isinstance(node, ast.FuncCall):
            self.expr(node.agg_filter, scope, ctes)
            self.expr(node.over, scope, ctes)
            return [*(node.args or ()), *(node.agg_order or ())]
        if isinstance(node, ast.A_Expr):
            return [*_listed(node.lexpr), *_listed(node.rexpr)]
        if isinstance(node, ast.TypeCast):
            return [node.arg]
        if isinstance(node, ast.A_ArrayExpr):
            return list(node.elements or ())
        if isinstance(node, ast.RowExpr):
            return list(node.args or ())
        if isinstance(node, ast.A_Indirection):
            for index in node.indirection or ():
                if isinstance(index, ast.A_Indices):
                    self.expr(index.lidx, scope, ctes)
                    self.expr(index.uidx, scope, ctes)
            return [node.arg]
        raise ValueSizeError(f"no size rule for {type(node).__name__}")  # pragma: no cover - the guard refuses it

    def _column(self, node: Any, scope: tuple[_Source, ...]) -> int:
        """A column is at most the largest column in scope. A whole row (`t`, or `t.*` in an expression) is a
        new value, a record: as ROW(…), its text escapes its columns' quotes once more."""
        fields = node.fields
        if isinstance(fields[-1], ast.A_Star):
            return self._build(node, 2 * sum(s.row for s in _named(scope, fields)) + FIXED_BYTES)
        size = max((s.column for s in scope), default=0)
        rows = [s.row for s in scope if len(fields) == 1 and s.name == fields[0].sval]
        return max(size, self._build(node, 2 * max(rows) + FIXED_BYTES)) if rows else size

    def _sublink(self, node: Any, scope: tuple[_Source, ...], ctes: Mapping[str, _Source]) -> int:
        kind = node.subLinkType
        if kind == enums.SubLinkType.ARRAY_SUBLINK:
            raise ValueSizeError("ARRAY(SELECT …) is not allowed: it makes one value of every row of its subquery; "
                                 "select the rows instead")
        self.expr(node.testexpr, scope, ctes)
        out = self.select(node.subselect, scope, ctes)
        return self._build(node, out.column) if kind == enums.SubLinkType.EXPR_SUBLINK else FIXED_BYTES

    def _case(self, node: Any, scope: tuple[_Source, ...], ctes: Mapping[str, _Source]) -> int:
        """CASE: one of its results, not a new value."""
        self.expr(node.arg, scope, ctes)
        results = [node.defresult]
        for when in node.args or ():
            self.expr(when.expr, scope, ctes)
            results.append(when.result)
        return self.expr(results, scope, ctes)

    def _build(self, node: Any, size: int) -> int:
        self.built += size
        if self.built > MAX_BUILT_BYTES:
            raise ValueSizeError(
                f"the values this query could build for one row come to more than {MAX_BUILT_BYTES // 2**20} MiB "
                f"(past it at {_what(node)}, which alone could make {_human(size)}). A value read from a view "
                f"counts as {VIEW_VALUE_BYTES // 1024} KiB, a number cast from text as {NUMBER_BYTES // 1000} kB, and "
                "a value joined from a subquery's joined values multiplies them: select the values themselves")
        return size


def _star(node: Any) -> tuple[Any, ...] | None:
    """The fields of `*` or `t.*`, or None for any other expression."""
    if isinstance(node, ast.ColumnRef) and node.fields and isinstance(node.fields[-1], ast.A_Star):
        return tuple(node.fields)
    return None


def _listed(node: Any) -> list[Any]:
    return [] if node is None else list(node) if isinstance(node, (list, tuple)) else [node]


def _named(sources: Iterable[_Source], fields: tuple[Any, ...]) -> list[_Source]:
    """The sources `t.*` (or `*`) stands for: those named t, or all when none is (or no name is given)."""
    every = list(sources)
    name = fields[-2].sval if len(fields) > 1 else None
    return [s for s in every if s.name == name] or every


def _what(node: Any) -> str:
    if isinstance(node, ast.FuncCall):
        return f"{last_name(node.funcname)}()"
    if isinstance(node, ast.A_Expr):
        return f"the {last_name(node.name)} operator" if node.kind == enums.A_Expr_Kind.AEXPR_OP else "an operator"
    if isinstance(node, ast.TypeCast):
        name, array = cast_type(node)
        return f"a cast to {name}{'[]' if array else ''}"
    names = {ast.A_ArrayExpr: "ARRAY[…]", ast.RowExpr: "ROW(…)", ast.A_Indirection: "a subscript",
             ast.SubLink: "a scalar subquery", ast.ColumnRef: "a whole-row reference"}
    return names.get(type(node), type(node).__name__)


def _human(size: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
