"""Go's ``fmt`` for :mod:`netmgr.cli.gotemplate`: values, printing and functions.

Everything the template language needs to know about values, apart from the
grammar and the walk over the tree:

* how Go prints a value (:func:`format_value`, ``%v``), Go's truthiness
  (:func:`is_true`) and :data:`MISSING`, the ``<no value>`` of a missing key;
* ``encoding/json`` output (:func:`to_json`) and ``fmt.Sprintf``/``Sprint``;
* the built-in function table :data:`BUILTINS` (Go's ``and``, ``eq``,
  ``index``, ``printf``... plus Docker's ``json``, ``join``, ``pad``...), each
  entry a :class:`Func` that carries the Go parameter types the executor
  checks. A function that fails raises :class:`FuncError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, NamedTuple

__all__ = [
    "ANY", "BUILTINS", "INT", "LIST", "MISSING", "STR", "Func", "FuncError",
    "format_value", "go_quote", "go_type", "is_true", "sorted_keys", "to_json",
]


class _Missing:
    """Go's invalid reflect.Value: a missing map key; prints ``<no value>``."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class FuncError(ValueError):
    """A template function failed; shown as ``error calling NAME: ...``."""


# ---------------------------------------------------------------- values, fmt


def is_true(value: Any) -> bool:
    """Go template truthiness: false, 0, nil, empty string/list/map are false."""
    if value is None or value is MISSING:
        return False
    if isinstance(value, (bool, int, float)):
        return bool(value)
    if isinstance(value, (str, list, tuple, Mapping)):
        return len(value) > 0
    return True


def go_type(value: Any) -> str:
    """The Go type name of *value*, as fmt's ``%T`` and error messages show it."""
    if value is None or value is MISSING:
        return "interface {}"
    for pytype, name in ((bool, "bool"), (int, "int"), (float, "float64"), (str, "string"),
                         ((list, tuple), "[]interface {}"), (Mapping, "map[string]interface {}")):
        if isinstance(value, pytype):
            return name
    return type(value).__name__


def sorted_keys(mapping: Mapping[Any, Any]) -> list[Any]:
    """Map keys in the order Go's fmt and ``range`` use: numbers first, then by type and value."""
    return sorted(mapping, key=lambda k: (not isinstance(k, (int, float)), str(type(k)), k))


def _go_float(f: float, lo: int, hi: int) -> str:
    """Shortest digits of *f*, in %e form when the exponent is < lo or >= hi."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, f) < 0 else ""
    if f == 0:
        return sign + "0"
    _, digit_tuple, exp_last = Decimal(repr(abs(f))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exp = len("".join(map(str, digit_tuple)).lstrip("0")) - 1 + int(exp_last)
    if exp < lo or exp >= hi:
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    dp = exp + 1
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{digits}"
    if dp >= len(digits):
        return sign + digits + "0" * (dp - len(digits))
    return f"{sign}{digits[:dp]}.{digits[dp:]}"


def format_value(value: Any) -> str:
    """Print *value* as Go's ``fmt`` does with ``%v`` (and templates do)."""
    if value is MISSING:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value, -4, 6)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = (f"{format_value(k)}:{format_value(value[k])}" for k in sorted_keys(value))
        return "map[" + " ".join(items) + "]"
    return str(value)


_QUOTE_ESC = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
              "\t": "\\t", "\v": "\\v", "\\": "\\\\"}


def go_quote(s: str, q: str = '"') -> str:
    """Go's strconv.Quote (or QuoteRune with q="'")."""
    out = [q]
    for ch in s:
        o = ord(ch)
        if ch == q:
            out.append("\\" + ch)
        elif ch in _QUOTE_ESC:
            out.append(_QUOTE_ESC[ch])
        elif ch.isprintable():
            out.append(ch)
        elif o < 0x80:
            out.append(f"\\x{o:02x}")
        else:
            out.append(f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out) + q


_JSON_ESC = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_JSON_RE = re.compile('[\\x00-\\x1f"\\\\\u2028\u2029]')


def _json_str(s: str) -> str:
    return '"' + _JSON_RE.sub(
        lambda m: _JSON_ESC.get(m.group()) or f"\\u{ord(m.group()):04x}", s) + '"'


def to_json(value: Any, indent: str | None = None) -> str:
    """Encode like Go's encoding/json without HTML escaping (MarshalIndent if *indent*).

    Dict keys keep their insertion order (Go structs keep field order).
    """
    out: list[str] = []
    _json_into(value, out, indent, "")
    return "".join(out)


def _json_into(value: Any, out: list[str], indent: str | None, cur: str) -> None:
    if value is None or value is MISSING:
        out.append("null")
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise FuncError(f"json: unsupported value: {_go_float(value, -4, 21)}")
        text = _go_float(value, -6, 21)
        out.append(re.sub(r"e-0(\d)$", r"e-\1", text))
    elif isinstance(value, (list, tuple, Mapping)):
        is_map = isinstance(value, Mapping)
        items = list(value.items()) if isinstance(value, Mapping) else list(enumerate(value))
        out.append("{" if is_map else "[")
        inner = cur + (indent or "")
        for i, (key, item) in enumerate(items):
            out.append("," if i else "")
            if indent is not None:
                out.append("\n" + inner)
            if is_map:
                out.append(_json_str(str(key)) + (": " if indent is not None else ":"))
            _json_into(item, out, indent, inner)
        if indent is not None and items:
            out.append("\n" + cur)
        out.append("}" if is_map else "]")
    else:
        out.append(_json_str(value if isinstance(value, str) else str(value)))


# ---------------------------------------------------------------- printf

_VERB_RE = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d*))?(.?)", re.DOTALL)


def _fmt_scalar(v: Any, verb: str, flags: str, prec: int | None) -> str | None:
    """One operand of printf, or None when the verb does not fit its type."""
    plus = "+" if "+" in flags else ""
    if v is None:
        return "<nil>" if verb == "v" else None
    if isinstance(v, bool):
        return ("true" if v else "false") if verb in "vt" else None
    if isinstance(v, int):
        if verb in "vd":
            return format(v, plus + "d")
        if verb in "xXob":
            return format(v, plus + ("#" if "#" in flags else "") + verb)
        if verb == "c":
            return chr(v)
        if verb == "q":
            return go_quote(chr(v), "'")
        return f"U+{v:04X}" if verb == "U" else None
    if isinstance(v, float):
        if verb in "vgG" and prec is None:
            text = plus * (v >= 0) + _go_float(v, -4, 6)
            return text.upper() if verb == "G" else text
        if verb in "fFeEgG":
            return format(v, f"{plus}.{6 if prec is None else prec}{verb}")
        return None
    if isinstance(v, str):
        if verb in "sv":
            return v if prec is None else v[:prec]
        if verb == "q":
            return go_quote(v)
        if verb in "xX":
            hexed = v.encode().hex()
            return hexed.upper() if verb == "X" else hexed
        return None
    return str(v) if verb in "sv" else None


def _fmt_arg(v: Any, verb: str, flags: str, width: int | None, prec: int | None) -> str:
    """Format one printf operand, recursing into lists and maps as fmt does."""
    if verb == "T":
        return _pad_field("<nil>" if v is None else go_type(v), v, flags, width)
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(_fmt_arg(e, verb, flags, width, prec) for e in v) + "]"
    if isinstance(v, Mapping):
        return "map[" + " ".join(
            f"{_fmt_arg(k, verb, flags, width, prec)}:{_fmt_arg(v[k], verb, flags, width, prec)}"
            for k in sorted_keys(v)) + "]"
    s = _fmt_scalar(v, verb, flags, prec)
    if s is None:
        return f"%!{verb}(<nil>)" if v is None else f"%!{verb}({go_type(v)}={format_value(v)})"
    return _pad_field(s, v, flags, width)


def _pad_field(s: str, v: Any, flags: str, width: int | None) -> str:
    if width is None or len(s) >= width:
        return s
    if "-" in flags:
        return s.ljust(width)
    if "0" in flags:
        if s[:1] in "+-" and not isinstance(v, str):
            return s[0] + s[1:].rjust(width - 1, "0")
        return s.rjust(width, "0")
    return s.rjust(width)


def _sprintf(fmt: str, *args: Any) -> str:
    """Go's fmt.Sprintf for the common verbs (%s %d %v %q %x %f %t ...)."""
    out, argi, last = [], 0, 0
    for m in _VERB_RE.finditer(fmt):
        out.append(fmt[last:m.start()])
        last = m.end()
        flags, width, prec, verb = m.groups()
        if verb == "%":
            out.append("%")
        elif not verb:
            out.append("%!(NOVERB)")
        elif argi >= len(args):
            out.append(f"%!{verb}(MISSING)")
        else:
            precision = None if prec is None else int(prec or 0)
            out.append(_fmt_arg(args[argi], verb, flags, int(width) if width else None, precision))
            argi += 1
    out.append(fmt[last:])
    if argi < len(args):
        extra = ", ".join("<nil>" if a is None else f"{go_type(a)}={format_value(a)}"
                          for a in args[argi:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _sprint(*args: Any) -> str:
    """Go's fmt.Sprint: a space between operands when neither is a string."""
    out: list[str] = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(format_value(a))
    return "".join(out)


# ---------------------------------------------------------------- functions


def _index(item: Any, *keys: Any) -> Any:
    if item is None:
        raise FuncError("index of untyped nil")
    for key in keys:
        if item is None:
            raise FuncError("index of nil pointer")
        if isinstance(item, Mapping):
            if not isinstance(key, str):
                what = "is nil" if key is None else f"has type {go_type(key)}"
                raise FuncError(f"value {what}; should be string")
            try:
                item = item[key]
            except (KeyError, TypeError):
                item = None
        elif isinstance(item, (list, tuple, str)):
            if not isinstance(key, int) or isinstance(key, bool):
                raise FuncError(f"cannot index slice/array with type {go_type(key)}")
            seq = item.encode() if isinstance(item, str) else item
            if not 0 <= key < len(seq):
                raise FuncError(f"index out of range: {key}")
            item = seq[key]
        else:
            raise FuncError(f"can't index item of type {go_type(item)}")
    return item


def _slice(item: Any, *idx: int) -> Any:
    if not isinstance(item, (str, list, tuple)):
        raise FuncError(f"can't slice item of type {go_type(item)}")
    if len(idx) > 2:
        raise FuncError("too many slice indexes")
    lo = idx[0] if idx else 0
    hi = idx[1] if len(idx) > 1 else len(item)
    for i in (lo, hi):
        if not 0 <= i <= len(item):
            raise FuncError(f"index out of range: {i}")
    if lo > hi:
        raise FuncError(f"invalid slice index: {lo} > {hi}")
    return item[lo:hi]


def _len(item: Any) -> int:
    if item is None:
        raise FuncError("len of nil pointer")
    if isinstance(item, str):
        return len(item.encode())
    if isinstance(item, (list, tuple, Mapping)):
        return len(item)
    raise FuncError(f"len of type {go_type(item)}")


def _kind(v: Any) -> str | None:
    if v is None:
        return None
    for pytype, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string")):
        if isinstance(v, pytype):
            return name
    return "nc" if isinstance(v, (list, tuple, Mapping)) else "other"


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise FuncError("missing argument for comparison")
    k1 = _kind(a) or "nc"  # Go gives nil and non-comparable values the same kind
    for b in others:
        k2 = _kind(b) or "nc"
        if k1 != k2:
            if a is not None and b is not None:
                raise FuncError("incompatible types for comparison")
        elif k1 != "nc":
            if a == b:
                return True
        elif a is None or b is None:
            if a is None and b is None:
                return True
        else:
            raise FuncError(f"non-comparable type {_sprintf('%s', b)}: {go_type(b)}")
    return False


def _lt(a: Any, b: Any) -> bool:
    k1, k2 = _kind(a), _kind(b)
    if k1 not in ("int", "float", "string") or k2 not in ("int", "float", "string"):
        raise FuncError("invalid type for comparison")
    if k1 != k2:
        raise FuncError("incompatible types for comparison")
    return bool(a < b)


def _title(s: str) -> str:
    """Go's strings.Title: upper-case letters that follow a separator."""
    def is_sep(ch: str) -> bool:
        if ord(ch) < 0x80:
            return not (ch.isalnum() or ch == "_")
        return not ch.isalnum() and ch.isspace()
    return "".join(ch.upper() if is_sep(prev) else ch for prev, ch in zip(" " + s, s))


def _split(s: str, sep: str) -> list[str]:
    return list(s) if sep == "" else s.split(sep)


def _join(items: list[Any], sep: str) -> str:
    return sep.join(i if isinstance(i, str) else format_value(i) for i in items)


def _pad(s: str, left: int, right: int) -> str:
    return s if s == "" else " " * left + s + " " * right


def _truncate(s: str, length: int) -> str:
    if length < 0:
        raise FuncError(f"slice bounds out of range [:{length}]")
    return s[:length]


def _json_func(value: Any) -> str:
    return to_json(value)


#: Go parameter types the executor checks arguments against
ANY, STR, INT, LIST = "any", "string", "int", "[]string"


class Func(NamedTuple):
    """A template function and the Go types of its parameters (ANY, STR, INT, LIST)."""

    fn: Callable[..., Any]
    params: tuple[str, ...]  # types of the fixed parameters
    variadic: str | None = None  # type of the rest, if any


BUILTINS: dict[str, Func] = {
    "and": Func(bool, (ANY,), ANY),  # evaluated lazily by the executor
    "or": Func(bool, (ANY,), ANY),
    "not": Func(lambda v: not is_true(v), (ANY,)),
    "len": Func(_len, (ANY,)),
    "index": Func(_index, (ANY,), ANY),
    "slice": Func(_slice, (ANY,), INT),
    "print": Func(_sprint, (), ANY),
    "println": Func(lambda *a: " ".join(format_value(v) for v in a) + "\n", (), ANY),
    "printf": Func(_sprintf, (STR,), ANY),
    "eq": Func(_eq, (ANY,), ANY),
    "ne": Func(lambda a, b: not _eq(a, b), (ANY, ANY)),
    "lt": Func(_lt, (ANY, ANY)),
    "le": Func(lambda a, b: _lt(a, b) or _eq(a, b), (ANY, ANY)),
    "gt": Func(lambda a, b: not (_lt(a, b) or _eq(a, b)), (ANY, ANY)),
    "ge": Func(lambda a, b: not _lt(a, b), (ANY, ANY)),
    "json": Func(_json_func, (ANY,)),
    "split": Func(_split, (STR, STR)),
    "join": Func(_join, (LIST, STR)),
    "title": Func(_title, (STR,)),
    "lower": Func(str.lower, (STR,)),
    "upper": Func(str.upper, (STR,)),
    "pad": Func(_pad, (STR, INT, INT)),
    "truncate": Func(_truncate, (STR, INT)),
}
