"""The size rule of each function, operator, cast, constructor and literal the SQL guard allows: how large its result
can be, given its inputs' sizes (`sql_size` adds them up over a statement and says why the bound holds). Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pglast import ast, enums

NUMBER_BYTES = 150_000  # a numeric's text: 131,072 digits, the point, 16,383 digits, the sign
SCALE_BYTES = 16_448  # the digits a division, round() or avg() may add after the point
FIXED_BYTES = 128  # an integer, float, date, time, interval or boolean, as text
LITERAL_FACTOR = 5

# Functions a revenue question needs, by how large their result can be. Nothing that sleeps, reads settings
# or files, writes, makes rows out of thin air (generate_series) or repeats its input (repeat, lpad, format
# widths, replace, string_agg/array_agg): those are left out, not bounded.
FUNCTION_SIZES: Mapping[str, str] = {
    **dict.fromkeys(("count", "bool_and", "bool_or", "every", "corr", "row_number", "rank", "dense_rank",
                     "percent_rank", "cume_dist", "ntile", "date_trunc", "date_part", "extract", "date_bin",
                     "make_date", "age", "to_date", "to_timestamp", "now", "timezone", "justify_days",
                     "justify_interval", "make_interval", "length", "char_length", "position", "starts_with"),
                    "fixed"),
    **dict.fromkeys(("sum", "avg", "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp",
                     "round", "abs", "ceil", "ceiling", "floor", "trunc", "div", "mod", "sign", "sqrt"), "number"),
    "power": "power",
    **dict.fromkeys(("min", "max", "mode", "lag", "lead", "first_value", "last_value", "nth_value", "substring",
                     "substr", "split_part", "left", "right", "trim", "btrim", "ltrim", "rtrim"), "input"),
    **dict.fromkeys(("percentile_cont", "percentile_disc"), "percentile"),  # one value per fraction asked
    **dict.fromkeys(("lower", "upper"), "case"),  # a character's other case may take up to three times its bytes
    "concat": "join", "concat_ws": "join_with", "to_char": "to_char",
}
# The types a value may be cast to. Others (json, geometry, text search, ranges…) would bring operators whose
# results the rules above do not cover: path + path joins, for one.
FIXED_TYPES = frozenset({"int2", "int4", "int8", "float4", "float8", "bool", "date", "time", "timetz", "timestamp",
                         "timestamptz", "interval"})
TEXT_TYPES = frozenset({"text", "varchar", "bpchar"})
CAST_TYPES = FIXED_TYPES | TEXT_TYPES | {"numeric"}

_TRUTH_OPERATORS = frozenset({"=", "<>", "!=", "<", ">", "<=", ">=", "~~", "~~*", "!~~", "!~~*", "~", "~*", "!~",
                              "!~*", "^@", "@>", "<@", "&&"})
_ARITHMETIC = frozenset({"+", "-", "*", "/", "%"})
_BITWISE = frozenset({"&", "|", "#", "<<", ">>"})
_EXPONENT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)[eE]([+-]?\d+)\s*")
_LITERAL_SLOTS = ("sval", "ival", "fval", "boolval", "bsval")


def size_of(node: Any, inputs: list[int]) -> int:
    """The size rule of a function, operator, cast or constructor, given its inputs' sizes."""
    largest, total = max(inputs, default=0), sum(inputs)
    if isinstance(node, ast.FuncCall):
        rule = FUNCTION_SIZES[last_name(node.funcname).lower()]
        if rule == "fixed":
            return FIXED_BYTES
        if rule in ("number", "power"):
            return NUMBER_BYTES if rule == "power" else min(NUMBER_BYTES, 2 * total + SCALE_BYTES)
        if rule == "percentile":
            return _fractions((node.args or (None,))[0], inputs[0]) * max(largest, FIXED_BYTES)
        if rule == "case":
            return 3 * largest
        if rule == "join_with":
            return (len(inputs) - 1) * inputs[0] + total
        if rule == "to_char":  # a pattern letter may print up to 16 characters ('J' a Julian day, 'RN' numerals)
            return 16 * inputs[-1] + FIXED_BYTES
        return total if rule == "join" else largest
    if isinstance(node, ast.A_Expr):
        return _operator(node, inputs, largest, total)
    if isinstance(node, ast.TypeCast):
        name, array = cast_type(node)
        if array and name == "numeric":  # each element read from text may be '1e131071': a number's whole size
            return (total // 2 + 1) * NUMBER_BYTES
        if array:
            return LITERAL_FACTOR * total + FIXED_BYTES
        if name in FIXED_TYPES:
            return FIXED_BYTES
        if name == "numeric":
            return min(NUMBER_BYTES, total + FIXED_BYTES) if is_number(node.arg) else NUMBER_BYTES
        return total
    if isinstance(node, ast.A_ArrayExpr):  # a nested ARRAY[…] is a dimension, not an escaped element
        elements = zip(inputs, node.elements or (), strict=True)
        nested = sum(size for size, element in elements if isinstance(element, ast.A_ArrayExpr))
        return 2 * (total - nested) + nested + 16 * len(inputs) + FIXED_BYTES
    if isinstance(node, ast.RowExpr):
        return 2 * total + 16 * len(inputs) + FIXED_BYTES
    return largest  # A_Indirection: a field, an element or a slice of its input


def _operator(node: ast.A_Expr, inputs: list[int], largest: int, total: int) -> int:
    kind = node.kind
    if kind == enums.A_Expr_Kind.AEXPR_NULLIF:
        return inputs[0]
    if kind != enums.A_Expr_Kind.AEXPR_OP:
        return FIXED_BYTES  # ANY/ALL, IN, LIKE, BETWEEN, IS DISTINCT FROM: a truth value
    op = last_name(node.name)
    if op in _TRUTH_OPERATORS and node.lexpr is not None:
        return FIXED_BYTES
    if op == "^":
        return NUMBER_BYTES
    if op in ("/", "|/", "||/"):  # numbers: a quotient or a root may add digits after the point
        return min(NUMBER_BYTES, total + SCALE_BYTES)
    if op in _ARITHMETIC or node.lexpr is None:  # numbers, dates, intervals (and unary -, @, ~): digits add up
        return min(NUMBER_BYTES, total + FIXED_BYTES)
    if op in _BITWISE:
        return largest
    return total + FIXED_BYTES  # || and anything else: never more than its operands together


def _fractions(arg: Any, size: int) -> int:
    """How many fractions a percentile is asked for: one, those of an ARRAY[…], else at most one per 2 bytes."""
    if isinstance(arg, ast.A_Const):
        return 1
    if isinstance(arg, ast.A_ArrayExpr) and not any(isinstance(e, ast.A_ArrayExpr) for e in arg.elements or ()):
        return len(arg.elements or ())
    return size // 2 + 1


def is_number(node: Any) -> bool:
    """Tells whether an expression is a number already, so a cast to numeric cannot read digits out of text."""
    if isinstance(node, ast.A_Const):
        return isinstance(node.val, (ast.Integer, ast.Float))
    if isinstance(node, ast.FuncCall):
        return FUNCTION_SIZES.get(last_name(node.funcname).lower()) in ("fixed", "number", "power")
    if isinstance(node, ast.A_Expr):
        return node.kind == enums.A_Expr_Kind.AEXPR_OP and last_name(node.name) in _ARITHMETIC | {"^"}
    if isinstance(node, ast.TypeCast):
        name, array = cast_type(node)
        return not array and name in FIXED_TYPES | {"numeric"}
    return False


def literal_size(value: Any) -> int:
    """A literal's size: its binary form may be larger than its text, and '1e131071' is 131,072 digits."""
    text = str(next((getattr(value, slot) for slot in _LITERAL_SLOTS if hasattr(value, slot)), ""))
    size = LITERAL_FACTOR * len(text.encode()) + FIXED_BYTES
    exponent = _EXPONENT.fullmatch(text)
    return size + min(abs(int(exponent.group(2))), NUMBER_BYTES) if exponent else size


def last_name(names: Any) -> str:
    """The last part of a dotted name: a function's, an operator's or a type's."""
    return str(names[-1].sval)


def cast_type(node: Any) -> tuple[str, bool]:
    """A cast's type name (lower case, without pg_catalog) and whether it is an array."""
    return last_name(node.typeName.names).lower(), bool(node.typeName.arrayBounds)
