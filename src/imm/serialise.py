"""Values made safe to hand on: JSON-ready values, spreadsheet-safe CSV cells and JMESPath ``--query`` results.

Shared by the CLI's renderer (:mod:`imm.cli.output`) and the services' report writers (:mod:`imm.services.reports`,
:mod:`imm.services.report_xlsx`), so both say the same thing and no service imports the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from imm.errors import InputError

__all__ = ["apply_query", "compile_query", "csv_cell", "to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """Datetimes as ISO 8601, sets and tuples as lists; everything else as it is."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v) for v in value]
    return value


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """Text for one CSV cell; a cell a spreadsheet would run as a formula gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple) and any(isinstance(v, dict | list | tuple) for v in value):
        text = json.dumps(to_jsonable(value), ensure_ascii=False, sort_keys=True)  # nested: JSON, not a repr
    elif isinstance(value, list | tuple):
        text = ";".join(str(v) for v in value)
    elif isinstance(value, dict):
        text = json.dumps(to_jsonable(value), ensure_ascii=False, sort_keys=True)
    elif isinstance(value, datetime | date):
        text = value.isoformat()
    else:
        text = str(value)
    if text.startswith(FORMULA_START):
        # A number such as "-3.5" is data, not a formula.
        try:
            float(text)
        except ValueError:
            return "'" + text
    return text


def apply_query(data: Any, query: str | None) -> Any:
    if not query:
        return data
    return compile_query(query)(data)


def compile_query(query: str) -> Callable[[Any], Any]:
    """The JMESPath expression parsed once (a bad one is an InputError), as a function of a JSON value."""
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        expression = jmespath.compile(query)
    except JMESPathError as exc:
        raise InputError(f"invalid --query expression {query!r}: {_query_problem(exc)}") from None

    def search(data: Any) -> Any:
        try:
            result = expression.search(to_jsonable(data))
        except JMESPathError as exc:
            raise InputError(f"invalid --query expression {query!r}: {_query_problem(exc)}") from None
        except (TypeError, ValueError, ArithmeticError, RecursionError) as exc:  # jmespath's evaluation failed
            raise InputError(f"--query expression {query!r} cannot be evaluated on this data ({exc})") from None
        if not _is_data(result):  # `&expr` evaluates to an expression reference, which no format can write
            raise InputError(f"--query expression {query!r} gives an expression reference (&…), not data")
        return result

    return search


def _is_data(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_is_data(v) for v in value.values())
    if isinstance(value, list):
        return all(_is_data(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def _query_problem(exc: Exception) -> str:
    """One short line for a JMESPath error (its own text spans lines, and may quote a whole record)."""
    from jmespath.exceptions import JMESPathTypeError, ParseError

    if isinstance(exc, JMESPathTypeError):
        expected = ", ".join(exc.expected_types)
        return f"in function {exc.function_name}(), a value of type {exc.actual_type} where {expected} was expected"
    text = str(exc).splitlines()[0].rstrip(": ") if str(exc) else type(exc).__name__
    if isinstance(exc, ParseError) and exc.lex_position is not None:
        text += f" at column {exc.lex_position + 1}"
    return text if len(text) <= 200 else text[:199] + "…"
