"""A subset of Go's ``text/template``, as the docker CLI uses it for ``--format``.

Data is JSON-like Python (dict, list, str, int, float, bool, None). Behaviour
follows Go's template package plus Docker's extra functions (``json``,
``split``, ``join``, ``title``, ``lower``, ``upper``, ``pad``, ``truncate``),
so a Docker user's format strings print the same text:

* ``{{.A.B}}`` looks up dict keys; a missing key (or a null) prints
  ``<no value>``, as Go does for ``map[string]interface{}``;
* ``if``/``with``/``range`` use Go's truthiness; ``range`` over a dict walks
  its keys in sorted order;
* values print like Go's ``fmt``: ``true``, ``<nil>``, ``[a b]``, ``map[k:v]``.

Errors, at parse or execution time, raise :class:`~netmgr.errors.InvalidConfig`
with Docker's wording, e.g. ``template parsing error: template: :1: function
"foo" not defined``.

Not supported: ``define``/``template``/``block``, custom delimiters, method
calls, complex numbers. ``len`` and ``index`` count UTF-8 bytes of a string as
Go does; ``slice`` and ``truncate`` work on characters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from netmgr.errors import InvalidConfig

__all__ = ["Template", "compile", "format_value", "is_true", "render", "to_json"]


class _Missing:
    """Go's invalid reflect.Value: a missing map key; prints ``<no value>``."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
_NOFINAL: Any = object()  # no value piped in from a previous command

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


def _go_type(value: Any) -> str:
    if value is None or value is MISSING:
        return "interface {}"
    for pytype, name in ((bool, "bool"), (int, "int"), (float, "float64"), (str, "string"),
                         ((list, tuple), "[]interface {}"), (Mapping, "map[string]interface {}")):
        if isinstance(value, pytype):
            return name
    return type(value).__name__


def _sorted_keys(mapping: Mapping[Any, Any]) -> list[Any]:
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
        items = (f"{format_value(k)}:{format_value(value[k])}" for k in _sorted_keys(value))
        return "map[" + " ".join(items) + "]"
    return str(value)


_QUOTE_ESC = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
              "\t": "\\t", "\v": "\\v", "\\": "\\\\"}


def _go_quote(s: str, q: str = '"') -> str:
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
            raise _FuncError(f"json: unsupported value: {_go_float(value, -4, 21)}")
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
            return _go_quote(chr(v), "'")
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
            return _go_quote(v)
        if verb in "xX":
            hexed = v.encode().hex()
            return hexed.upper() if verb == "X" else hexed
        return None
    return str(v) if verb in "sv" else None


def _fmt_arg(v: Any, verb: str, flags: str, width: int | None, prec: int | None) -> str:
    """Format one printf operand, recursing into lists and maps as fmt does."""
    if verb == "T":
        return _pad_field("<nil>" if v is None else _go_type(v), v, flags, width)
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(_fmt_arg(e, verb, flags, width, prec) for e in v) + "]"
    if isinstance(v, Mapping):
        return "map[" + " ".join(
            f"{_fmt_arg(k, verb, flags, width, prec)}:{_fmt_arg(v[k], verb, flags, width, prec)}"
            for k in _sorted_keys(v)) + "]"
    s = _fmt_scalar(v, verb, flags, prec)
    if s is None:
        return f"%!{verb}(<nil>)" if v is None else f"%!{verb}({_go_type(v)}={format_value(v)})"
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
        extra = ", ".join("<nil>" if a is None else f"{_go_type(a)}={format_value(a)}"
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


class _FuncError(ValueError):
    """A template function failed; shown as ``error calling NAME: ...``."""


def _index(item: Any, *keys: Any) -> Any:
    if item is None:
        raise _FuncError("index of untyped nil")
    for key in keys:
        if item is None:
            raise _FuncError("index of nil pointer")
        if isinstance(item, Mapping):
            if not isinstance(key, str):
                what = "is nil" if key is None else f"has type {_go_type(key)}"
                raise _FuncError(f"value {what}; should be string")
            try:
                item = item[key]
            except (KeyError, TypeError):
                item = None
        elif isinstance(item, (list, tuple, str)):
            if not isinstance(key, int) or isinstance(key, bool):
                raise _FuncError(f"cannot index slice/array with type {_go_type(key)}")
            seq = item.encode() if isinstance(item, str) else item
            if not 0 <= key < len(seq):
                raise _FuncError(f"index out of range: {key}")
            item = seq[key]
        else:
            raise _FuncError(f"can't index item of type {_go_type(item)}")
    return item


def _slice(item: Any, *idx: int) -> Any:
    if not isinstance(item, (str, list, tuple)):
        raise _FuncError(f"can't slice item of type {_go_type(item)}")
    if len(idx) > 2:
        raise _FuncError("too many slice indexes")
    lo = idx[0] if idx else 0
    hi = idx[1] if len(idx) > 1 else len(item)
    for i in (lo, hi):
        if not 0 <= i <= len(item):
            raise _FuncError(f"index out of range: {i}")
    if lo > hi:
        raise _FuncError(f"invalid slice index: {lo} > {hi}")
    return item[lo:hi]


def _len(item: Any) -> int:
    if item is None:
        raise _FuncError("len of nil pointer")
    if isinstance(item, str):
        return len(item.encode())
    if isinstance(item, (list, tuple, Mapping)):
        return len(item)
    raise _FuncError(f"len of type {_go_type(item)}")


def _kind(v: Any) -> str | None:
    if v is None:
        return None
    for pytype, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string")):
        if isinstance(v, pytype):
            return name
    return "nc" if isinstance(v, (list, tuple, Mapping)) else "other"


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise _FuncError("missing argument for comparison")
    k1 = _kind(a) or "nc"  # Go gives nil and non-comparable values the same kind
    for b in others:
        k2 = _kind(b) or "nc"
        if k1 != k2:
            if a is not None and b is not None:
                raise _FuncError("incompatible types for comparison")
        elif k1 != "nc":
            if a == b:
                return True
        elif a is None or b is None:
            if a is None and b is None:
                return True
        else:
            raise _FuncError(f"non-comparable type {_sprintf('%s', b)}: {_go_type(b)}")
    return False


def _lt(a: Any, b: Any) -> bool:
    k1, k2 = _kind(a), _kind(b)
    if k1 not in ("int", "float", "string") or k2 not in ("int", "float", "string"):
        raise _FuncError("invalid type for comparison")
    if k1 != k2:
        raise _FuncError("incompatible types for comparison")
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
        raise _FuncError(f"slice bounds out of range [:{length}]")
    return s[:length]


def _json_func(value: Any) -> str:
    return to_json(value)


_ANY, _STR, _INT, _LIST = "any", "string", "int", "[]string"


class _Func(NamedTuple):
    fn: Callable[..., Any]
    params: tuple[str, ...]  # types of the fixed parameters
    variadic: str | None = None  # type of the rest, if any


_BUILTINS: dict[str, _Func] = {
    "and": _Func(bool, (_ANY,), _ANY),  # evaluated lazily by the executor
    "or": _Func(bool, (_ANY,), _ANY),
    "not": _Func(lambda v: not is_true(v), (_ANY,)),
    "len": _Func(_len, (_ANY,)),
    "index": _Func(_index, (_ANY,), _ANY),
    "slice": _Func(_slice, (_ANY,), _INT),
    "print": _Func(_sprint, (), _ANY),
    "println": _Func(lambda *a: " ".join(format_value(v) for v in a) + "\n", (), _ANY),
    "printf": _Func(_sprintf, (_STR,), _ANY),
    "eq": _Func(_eq, (_ANY,), _ANY),
    "ne": _Func(lambda a, b: not _eq(a, b), (_ANY, _ANY)),
    "lt": _Func(_lt, (_ANY, _ANY)),
    "le": _Func(lambda a, b: _lt(a, b) or _eq(a, b), (_ANY, _ANY)),
    "gt": _Func(lambda a, b: not (_lt(a, b) or _eq(a, b)), (_ANY, _ANY)),
    "ge": _Func(lambda a, b: not _lt(a, b), (_ANY, _ANY)),
    "json": _Func(_json_func, (_ANY,)),
    "split": _Func(_split, (_STR, _STR)),
    "join": _Func(_join, (_LIST, _STR)),
    "title": _Func(_title, (_STR,)),
    "lower": _Func(str.lower, (_STR,)),
    "upper": _Func(str.upper, (_STR,)),
    "pad": _Func(_pad, (_STR, _INT, _INT)),
    "truncate": _Func(_truncate, (_STR, _INT)),
}

# ---------------------------------------------------------------- lexer

_SPACE = " \t\r\n"
_KEYWORDS = frozenset(["if", "else", "end", "range", "with", "break", "continue",
                       "define", "template", "block", "nil"])
_TOKEN_RE = re.compile(r"""
  (?P<string>"(?:[^"\\\n]|\\.)*")
| (?P<raw>`[^`]*`)
| (?P<char>'(?:[^'\\\n]|\\.)*')
| (?P<number>[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+
              |(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?))
| (?P<field>\.[^\W\d]\w*)
| (?P<dot>\.)
| (?P<var>\$\w*)
| (?P<decl>:=) | (?P<assign>=) | (?P<pipe>\|) | (?P<lparen>\() | (?P<rparen>\)) | (?P<comma>,)
| (?P<ident>[^\W\d]\w*)
""", re.VERBOSE)
_ESC_RE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|([0-7]{3})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.))",
                     re.DOTALL)
_SIMPLE_ESC = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
               "\\": "\\", '"': '"', "'": "'"}


class _ParseError(Exception):
    def __init__(self, msg: str, pos: int) -> None:
        super().__init__(msg)
        self.msg, self.pos = msg, pos


class _Tok(NamedTuple):
    kind: str  # eof is the closing "}}"
    val: Any
    pos: int
    end: int
    text: str

    def show(self) -> str:
        """Show the token as Go's parser does in error messages."""
        if self.kind == "dot" or (self.kind == "ident" and self.val in _KEYWORDS):
            return f"<{self.text}>"
        return _go_quote(self.text[:10]) + "..." if len(self.text) > 10 else _go_quote(self.text)


class _LexError(_ParseError):
    def __init__(self, msg: str, pos: int, toks: list[_Tok] | None = None) -> None:
        super().__init__(msg, pos)
        self.toks = toks or []


def _unquote(body: str, pos: int) -> str:
    buf, last = bytearray(), 0
    try:
        for m in _ESC_RE.finditer(body):
            buf += body[last:m.start()].encode()
            last = m.end()
            hx, octal, u4, u8, other = m.groups()
            if hx or octal:
                buf.append(int(hx, 16) if hx else int(octal, 8))
            elif u4 or u8:
                buf += chr(int(u4 or u8, 16)).encode()
            else:
                buf += _SIMPLE_ESC[other].encode()
        buf += body[last:].encode()
    except (KeyError, ValueError, UnicodeEncodeError):
        raise _ParseError("invalid syntax", pos) from None
    return buf.decode("utf-8", errors="replace")


def _parse_number(text: str, pos: int) -> int | float:
    t = text.replace("_", "")
    try:
        if re.match(r"[+-]?0[xXbBoO]", t):
            return int(t, 0)
        if any(c in t for c in ".eE"):
            return float(t)
        return int(t, 8) if re.fullmatch(r"[+-]?0\d+", t) else int(t)
    except ValueError:
        raise _ParseError(f"illegal number syntax: {_go_quote(text)}", pos) from None


def _token_value(kind: str, text: str, pos: int) -> Any:
    if kind == "string":
        return _unquote(text[1:-1], pos)
    if kind == "raw":
        return text[1:-1].replace("\r", "")
    if kind == "char":
        s = _unquote(text[1:-1], pos)
        if len(s) != 1:
            raise _ParseError(f"malformed character constant: {text}", pos)
        return ord(s)
    if kind == "number":
        return _parse_number(text, pos)
    return text[1:] if kind == "field" else text


def _lex_action(src: str, i: int) -> tuple[list[_Tok], int, bool]:
    """Tokens of one action from *i*; returns (tokens, position after "}}", right-trim)."""
    toks: list[_Tok] = []
    try:
        return _lex_tokens(src, i, toks)
    except _ParseError as exc:
        raise _LexError(exc.msg, exc.pos, toks) from None


def _sign_error(src: str, i: int) -> str:
    j = i + 1 + (src[i + 1:i + 2] == ".")
    if j < len(src) and src[j].isalnum():
        return f"bad number syntax: {_go_quote(src[i:j + 1])}"
    return f"illegal number syntax: {_go_quote(src[i])}"


def _lex_tokens(src: str, i: int, toks: list[_Tok]) -> tuple[list[_Tok], int, bool]:
    n = len(src)
    while True:
        if i >= n:
            raise _ParseError("unclosed action", i)
        if src.startswith("}}", i):
            return toks + [_Tok("eof", "}}", i, i + 2, "}}")], i + 2, False
        c = src[i]
        if c in _SPACE:
            j = i
            while j < n and src[j] in _SPACE:
                j += 1
            if src.startswith("-}}", j):
                return toks + [_Tok("eof", "}}", j, j + 3, "}}")], j + 3, True
            toks.append(_Tok("space", " ", i, j, src[i:j]))
            i = j
            continue
        m = _TOKEN_RE.match(src, i)
        if m is None:
            if c in "\"`'":
                what = {'"': "quoted string", "`": "raw quoted string", "'": "character constant"}
                raise _ParseError(f"unterminated {what[c]}", i)
            if c in "+-":
                raise _ParseError(_sign_error(src, i), i)
            if c.isascii() and c.isprintable():
                toks.append(_Tok("char", c, i, i + 1, c))
                i += 1
                continue
            raise _ParseError(f"unrecognized character in action: U+{ord(c):04X} '{c}'", i)
        kind, text, j = m.lastgroup or "", m.group(), m.end()
        kind = "string" if kind == "raw" else kind
        nxt = src[j] if j < n else " "
        if kind == "number" and (nxt.isalnum() or nxt in "._"):
            raise _ParseError(f"bad number syntax: {_go_quote(src[i:j + 1])}", i)
        if kind in ("field", "ident", "var") and nxt not in _SPACE + ".,|:()}":
            raise _ParseError(f"bad character U+{ord(nxt):04X} '{nxt}'", j)
        val = _token_value(m.lastgroup or "", text, i)
        toks.append(_Tok("number" if kind == "char" else kind, val, i, j, text))
        i = j


def _skip_comment(src: str, i: int) -> tuple[int, bool]:
    end = src.find("*/", i + 2)
    if end < 0:
        raise _LexError("unclosed comment", i)
    j = end + 2
    if src.startswith("}}", j):
        return j + 2, False
    if j < len(src) and src[j] in _SPACE and src.startswith("-}}", j + 1):
        return j + 4, True
    raise _LexError("comment ends before closing delimiter", j)


def _scan(src: str) -> list[tuple[str, Any, int]]:
    """Split *src* into ("text", str, pos) and ("action", tokens, pos), trimming as asked."""
    segs: list[tuple[str, Any, int]] = []
    pos, trim = 0, False
    while True:
        start = src.find("{{", pos)
        text = src[pos:] if start < 0 else src[pos:start]
        ltrim = start >= 0 and src.startswith("-", start + 2) and \
            len(src) > start + 3 and src[start + 3] in _SPACE
        text = text.lstrip(_SPACE) if trim else text
        text = text.rstrip(_SPACE) if ltrim else text
        if text:
            segs.append(("text", text, pos))
        if start < 0:
            return segs
        inner = start + (4 if ltrim else 2)
        try:
            if src.startswith("/*", inner):
                pos, trim = _skip_comment(src, inner)
                continue
            toks, pos, trim = _lex_action(src, inner)
        except _LexError as exc:
            toks = exc.toks + [_Tok("error", exc.msg, exc.pos, exc.pos, "")]
            return segs + [("action", toks, start)]
        segs.append(("action", toks, start))


# ---------------------------------------------------------------- parse tree


@dataclass(slots=True)
class _Arg:
    """An operand: kind is field, var, chain, ident, const, dot, nil or pipe."""

    kind: str
    pos: int
    text: str
    names: tuple[str, ...] = ()  # field chain (for var: the variable first)
    value: Any = None  # const value, ident name, sub-pipe or chained operand


@dataclass(slots=True)
class _Command:
    args: list[_Arg]
    pos: int
    text: str


@dataclass(slots=True)
class _Pipe:
    decl: list[str]
    is_assign: bool
    cmds: list[_Command]
    pos: int
    text: str


@dataclass(slots=True)
class _Branch:
    kind: str  # if, with, range, action, break, continue
    pipe: _Pipe | None
    body: list[Any]
    else_body: list[Any] | None = None


class _Cursor:
    """Walks the tokens of one action; peeking past the end gives the closing token."""

    def __init__(self, toks: list[_Tok]) -> None:
        self.toks, self.i = toks, 0

    def peek(self) -> _Tok:
        tok = self.toks[min(self.i, len(self.toks) - 1)]
        if tok.kind == "error":  # lexical errors surface in source order, as in Go
            raise _ParseError(tok.val, tok.pos)
        return tok

    def next(self) -> _Tok:
        tok = self.peek()
        self.i += 1
        return tok

    def peek_non_space(self) -> _Tok:
        while self.peek().kind == "space":
            self.i += 1
        return self.peek()

    def next_non_space(self) -> _Tok:
        self.peek_non_space()
        return self.next()


_CONTROL_ENDS = ("end", "else")


class _Parser:
    """Builds the node list; checks functions and variables as Go's parser does."""

    def __init__(self, src: str, funcs: Mapping[str, _Func]) -> None:
        self.src, self.funcs = src, funcs
        self.segs = _scan(src)
        self.i, self.vars, self.range_depth = 0, ["$"], 0

    def parse(self) -> list[Any]:
        nodes, stop, cur = self.item_list()
        if cur is not None:
            raise _ParseError(f"unexpected {{{{{stop}}}}}", cur.toks[0].pos)
        return nodes

    def item_list(self) -> tuple[list[Any], str, _Cursor | None]:
        """Nodes up to {{end}}, {{else}} or the end; returns the stopper and its cursor."""
        nodes: list[Any] = []
        while self.i < len(self.segs):
            kind, val, _ = self.segs[self.i]
            self.i += 1
            if kind == "text":
                nodes.append(val)
                continue
            cur = _Cursor(val)
            first = cur.peek_non_space()
            if first.kind == "ident" and first.val in _CONTROL_ENDS:
                cur.next()
                nxt = cur.peek_non_space()
                if first.val == "end" or not (nxt.kind == "ident" and nxt.val in ("if", "with")):
                    self.expect_end(cur, first.val)
                return nodes, first.val, cur
            nodes.append(self.action(cur, first))
        return nodes, "EOF", None

    def action(self, cur: _Cursor, first: _Tok) -> _Branch:
        word = first.val if first.kind == "ident" else ""
        if word in ("if", "with", "range"):
            cur.next()
            return self.control(word, cur)
        if word in ("break", "continue"):
            if not self.range_depth:
                raise _ParseError(f"{{{{{word}}}}} outside {{{{range}}}}", first.pos)
            cur.next()
            self.expect_end(cur, word)
            return _Branch(word, None, [])
        if word in ("define", "template", "block"):
            raise _ParseError(f"{{{{{word}}}}} is not supported", first.pos)
        return _Branch("action", self.pipeline(cur, "command", "eof"), [])

    def expect_end(self, cur: _Cursor, context: str) -> None:
        tok = cur.next_non_space()
        if tok.kind != "eof":
            raise _ParseError(f"unexpected {tok.show()} in {context}", tok.pos)

    def control(self, kind: str, cur: _Cursor) -> _Branch:
        mark = len(self.vars)
        pipe = self.pipeline(cur, kind, "eof")
        self.range_depth += kind == "range"
        body, stop, end = self.item_list()
        self.range_depth -= kind == "range"
        node = _Branch(kind, pipe, body)
        if end is None:
            raise _ParseError("unexpected EOF", len(self.src))
        if stop == "else":
            nxt = end.peek_non_space()
            if kind != "range" and nxt.kind == "ident" and nxt.val == kind:
                end.next()
                node.else_body = [self.control(kind, end)]  # "else if": one {{end}} closes both
                del self.vars[mark:]
                return node
            if nxt.kind != "eof":
                raise _ParseError(f"unexpected {nxt.show()} in else", nxt.pos)
            node.else_body, stop, end = self.item_list()
            if end is None:
                raise _ParseError("unexpected EOF", len(self.src))
            if stop != "end":
                raise _ParseError(f"expected end; found {{{{{stop}}}}}", end.toks[0].pos)
        del self.vars[mark:]
        return node

    def pipeline(self, cur: _Cursor, context: str, end: str) -> _Pipe:
        start = cur.peek_non_space()
        pipe = _Pipe([], False, [], start.pos, "")
        self.declarations(cur, pipe, context)
        while True:
            tok = cur.next_non_space()
            if tok.kind == end:
                break
            if tok.kind == "eof":
                raise _ParseError("unclosed left paren", tok.pos)
            operand = tok.kind in ("ident", "dot", "field", "var", "number", "string", "lparen")
            if not operand or (tok.kind == "ident" and tok.val in _KEYWORDS - {"nil"}):
                raise _ParseError(f"unexpected {tok.show()} in {context}", tok.pos)
            cur.i -= 1
            pipe.cmds.append(self.command(cur))
        if not pipe.cmds:
            raise _ParseError(f"missing value for {context}", tok.pos)
        for i, cmd in enumerate(pipe.cmds[1:]):
            if cmd.args[0].kind in ("const", "dot", "nil"):
                raise _ParseError(f"non executable command in pipeline stage {i + 2}", cmd.pos)
        pipe.text = self.src[start.pos:pipe.cmds[-1].pos + len(pipe.cmds[-1].text)]
        return pipe

    def declarations(self, cur: _Cursor, pipe: _Pipe, context: str) -> None:
        while True:
            save = cur.i
            var = cur.peek_non_space()
            if var.kind != "var":
                return
            cur.next()
            after = cur.next_non_space()
            if after.kind in ("decl", "assign"):
                pipe.is_assign = after.kind == "assign"
                pipe.decl.append(var.val)
                self.vars.append(var.val)
                return
            if after.kind != "comma":
                cur.i = save
                return
            pipe.decl.append(var.val)
            self.vars.append(var.val)
            if context == "range" and len(pipe.decl) < 2:
                if cur.peek_non_space().kind == "var":
                    continue
                raise _ParseError("range can only initialize variables", after.pos)
            raise _ParseError(f"too many declarations in {context}", after.pos)

    def command(self, cur: _Cursor) -> _Command:
        cmd = _Command([], cur.peek_non_space().pos, "")
        end = cmd.pos
        while True:
            cur.peek_non_space()
            operand = self.operand(cur)
            if operand is not None:
                cmd.args.append(operand)
                end = cur.toks[cur.i - 1].end
            tok = cur.next()
            if tok.kind == "space":
                continue
            if tok.kind in ("eof", "rparen"):
                cur.i -= 1
            elif tok.kind != "pipe":
                raise _ParseError(f"unexpected {tok.show()} in operand", tok.pos)
            break
        if not cmd.args:
            raise _ParseError("empty command", cmd.pos)
        cmd.text = self.src[cmd.pos:end]
        return cmd

    def operand(self, cur: _Cursor) -> _Arg | None:
        node = self.term(cur)
        if node is None or cur.peek().kind != "field":
            return node
        names, chain_pos = [], cur.peek().pos
        while cur.peek().kind == "field":
            names.append(cur.next().val)
        text = self.src[node.pos:cur.toks[cur.i - 1].end]
        if node.kind in ("field", "var"):
            # Go reports errors at the first chained field
            return _Arg(node.kind, chain_pos, text, node.names + tuple(names))
        if node.kind in ("const", "dot", "nil"):
            raise _ParseError(f"unexpected . after term {_go_quote(node.text)}", node.pos)
        return _Arg("chain", node.pos, text, tuple(names), node)

    def term(self, cur: _Cursor) -> _Arg | None:
        tok = cur.next_non_space()
        kind = tok.kind
        if kind == "ident" and tok.val in ("true", "false"):
            return _Arg("const", tok.pos, tok.text, value=tok.val == "true")
        if kind == "ident" and tok.val == "nil":
            return _Arg("nil", tok.pos, tok.text)
        if kind == "ident" and tok.val not in _KEYWORDS:
            if tok.val not in self.funcs:
                raise _ParseError(f"function {_go_quote(tok.val)} not defined", tok.pos)
            return _Arg("ident", tok.pos, tok.text, value=tok.val)
        if kind == "var":
            if tok.val not in self.vars:
                raise _ParseError(f"undefined variable {_go_quote(tok.val)}", tok.pos)
            return _Arg("var", tok.pos, tok.text, (tok.val,))
        if kind in ("dot", "field"):
            return _Arg(kind, tok.pos, tok.text, (tok.val,) if kind == "field" else ())
        if kind in ("number", "string"):
            return _Arg("const", tok.pos, tok.text, value=tok.val)
        if kind == "lparen":
            pipe = self.pipeline(cur, "parenthesized pipeline", "rparen")
            return _Arg("pipe", tok.pos, self.src[tok.pos:cur.toks[cur.i - 1].end], value=pipe)
        cur.i -= 1
        return None


# ---------------------------------------------------------------- execution


class _ExecError(Exception):
    def __init__(self, msg: str, node: _Arg | _Command | _Pipe) -> None:
        super().__init__(msg)
        self.msg, self.node = msg, node


class _Jump(Exception):
    """{{break}} or {{continue}}, caught by the enclosing range."""


class _Exec:
    """One execution of a template: the output, the variable stack, the functions."""

    def __init__(self, data: Any, funcs: Mapping[str, _Func], out: list[str]) -> None:
        self.vars: list[list[Any]] = [["$", data]]
        self.funcs, self.out = funcs, out

    def walk(self, dot: Any, nodes: list[Any]) -> None:
        for node in nodes:
            if isinstance(node, str):
                self.out.append(node)
            elif node.kind == "action":
                value = self.pipeline(dot, node.pipe)
                if not node.pipe.decl:
                    self.out.append(format_value(value))
            elif node.kind in ("break", "continue"):
                raise _Jump(node.kind)
            else:
                mark = len(self.vars)
                try:
                    (self.range_ if node.kind == "range" else self.if_with)(dot, node)
                finally:
                    del self.vars[mark:]

    def if_with(self, dot: Any, node: _Branch) -> None:
        assert node.pipe is not None
        value = self.pipeline(dot, node.pipe)
        if is_true(value):
            self.walk(value if node.kind == "with" else dot, node.body)
        elif node.else_body is not None:
            self.walk(dot, node.else_body)

    def range_(self, dot: Any, node: _Branch) -> None:
        pipe = node.pipe
        assert pipe is not None
        value = self.pipeline(dot, pipe, declare=False)
        if isinstance(value, (list, tuple)):
            items: list[tuple[Any, Any]] = list(enumerate(value))
        elif isinstance(value, Mapping):
            items = [(k, value[k]) for k in _sorted_keys(value)]
        elif isinstance(value, int) and not isinstance(value, bool):
            items = [(i, i) for i in range(value)]
        elif value is MISSING:
            items = []
        else:
            raise _ExecError(f"range can't iterate over {format_value(value)}", pipe)
        mark = len(self.vars)
        for key, elem in items:
            del self.vars[mark:]
            if len(pipe.decl) == 2:
                self.vars.append([pipe.decl[0], key])
            if pipe.decl:
                self.vars.append([pipe.decl[-1], elem])
            try:
                self.walk(elem, node.body)
            except _Jump as jump:
                if str(jump) == "break":
                    break
        if not items and node.else_body is not None:
            self.walk(dot, node.else_body)

    def pipeline(self, dot: Any, pipe: _Pipe, declare: bool = True) -> Any:
        value, final = MISSING, _NOFINAL
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, final)
            # Go unwraps a nil interface into an invalid value ("<no value>").
            final = value = MISSING if value is None else value
        for name in pipe.decl if declare else ():
            if pipe.is_assign:
                self.variable(name, pipe)[1] = value
            else:
                self.vars.append([name, value])
        return value

    def variable(self, name: str, node: _Arg | _Pipe) -> list[Any]:
        for entry in reversed(self.vars):
            if entry[0] == name:
                return entry
        raise _ExecError(f"undefined variable: {name}", node)

    def command(self, dot: Any, cmd: _Command, final: Any) -> Any:
        first = cmd.args[0]
        if first.kind == "ident":
            return self.call(dot, first, cmd, final)
        if first.kind in ("field", "chain") or (first.kind == "var" and len(first.names) > 1):
            return self.operand(dot, first, cmd.args, final)
        if len(cmd.args) > 1 or final is not _NOFINAL:
            raise _ExecError(f"can't give argument to non-function {first.text}", first)
        if first.kind == "nil":
            raise _ExecError("nil is not a command", first)
        return self.operand(dot, first, cmd.args, final)

    def operand(self, dot: Any, node: _Arg, args: list[_Arg], final: Any) -> Any:
        """Evaluate a non-function operand; *args*/*final* only matter to its last field."""
        kind = node.kind
        if kind == "const":
            return node.value
        if kind == "dot":
            return dot
        if kind == "nil":
            return None
        if kind == "ident":
            return self.call(dot, node, _Command([node], node.pos, node.text), _NOFINAL)
        if kind == "pipe":
            return self.pipeline(dot, node.value)
        names = node.names
        if kind == "var":
            receiver, names = self.variable(names[0], node)[1], names[1:]
        elif kind == "chain":
            if node.value.kind == "nil":
                raise _ExecError(f"indirection through explicit nil in {node.text}", node)
            receiver = self.operand(dot, node.value, [node.value], _NOFINAL)
        else:
            receiver = dot
        for i, name in enumerate(names):
            last = i == len(names) - 1
            has_args = last and (len(args) > 1 or final is not _NOFINAL)
            receiver = self.field(receiver, name, node, has_args)
        return receiver

    def field(self, receiver: Any, name: str, node: _Arg, has_args: bool) -> Any:
        if receiver is MISSING:
            return MISSING
        if isinstance(receiver, Mapping):
            if has_args:
                raise _ExecError(f"{name} is not a method but has arguments", node)
            try:
                return receiver[name]
            except KeyError:
                return MISSING
        if receiver is None:
            raise _ExecError(f"nil pointer evaluating interface {{}}.{name}", node)
        plain = isinstance(receiver, (str, int, float, list, tuple))
        if plain or name.startswith("_") or not hasattr(receiver, name):
            # JSON-like values sit in interfaces, hence Go's type name here
            raise _ExecError(f"can't evaluate field {name} in type interface {{}}", node)
        if has_args:
            raise _ExecError(f"{name} is not a method but has arguments", node)
        return getattr(receiver, name)

    def call(self, dot: Any, ident: _Arg, cmd: _Command, final: Any) -> Any:
        name, args = ident.value, cmd.args[1:]
        func = self.funcs[name]
        count = len(args) + (final is not _NOFINAL)
        want = len(func.params)
        if count < want or (func.variadic is None and count > want):
            least = "at least " if func.variadic else ""
            raise _ExecError(f"wrong number of args for {name}: want {least}{want} got {count}",
                             ident)
        types = [*func.params, *[func.variadic or _ANY] * (count - want)]
        if name in ("and", "or"):
            return self.and_or(dot, name == "and", args, final)
        values = [self.arg(dot, a, t) for a, t in zip(args, types)]
        if final is not _NOFINAL:
            values.append(self.check(final, types[-1], cmd))
        try:
            return func.fn(*values)
        except (_FuncError, TypeError, ValueError, KeyError, IndexError) as exc:
            raise _ExecError(f"error calling {name}: {exc}", cmd) from None

    def and_or(self, dot: Any, is_and: bool, args: list[_Arg], final: Any) -> Any:
        value = MISSING
        for node in args:
            value = self.arg(dot, node, _ANY)
            if is_true(value) != is_and:
                return value
        return final if final is not _NOFINAL else value

    def arg(self, dot: Any, node: _Arg, typ: str) -> Any:
        """Evaluate a function argument and check it against the parameter type."""
        if node.kind == "nil":
            if typ != _ANY:
                raise _ExecError(f"cannot assign nil to {typ}", node)
            return None
        if node.kind != "const":
            return self.check(self.operand(dot, node, [node], _NOFINAL), typ, node)
        value = node.value
        if typ == _STR and not isinstance(value, str):
            raise _ExecError(f"expected string; found {node.text}", node)
        if typ == _INT:
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if not isinstance(value, int) or isinstance(value, bool):
                raise _ExecError(f"expected integer; found {node.text}", node)
        if typ == _LIST:
            raise _ExecError(f"can't handle {node.text} for arg of type {typ}", node)
        return value

    def check(self, value: Any, typ: str, node: _Arg | _Command) -> Any:
        if typ == _ANY:
            return None if value is MISSING else value
        if value is MISSING:
            raise _ExecError(f"invalid value; expected {typ}", node)
        ok = {_STR: isinstance(value, str), _LIST: isinstance(value, (list, tuple)),
              _INT: isinstance(value, int) and not isinstance(value, bool)}[typ]
        if not ok:
            raise _ExecError(f"wrong type for value; expected {typ}; got {_go_type(value)}", node)
        return value


# ---------------------------------------------------------------- public API


def _location(src: str, pos: int) -> tuple[int, int]:
    return src.count("\n", 0, pos) + 1, pos - (src.rfind("\n", 0, pos) + 1)


def _custom(fn: Callable[..., Any]) -> _Func:
    return _Func(fn, (), _ANY)


class Template:
    """A parsed template; :meth:`execute` it with data as many times as needed."""

    def __init__(self, source: str, funcs: Mapping[str, Callable[..., Any]] | None = None) -> None:
        """Parse *source*; *funcs* adds or replaces functions (plain Python callables)."""
        self.source = source
        self._funcs = {**_BUILTINS, **{k: _custom(f) for k, f in (funcs or {}).items()}}
        try:
            self._nodes = _Parser(source, self._funcs).parse()
        except _ParseError as exc:
            line, _ = _location(source, exc.pos)
            raise InvalidConfig(f"template parsing error: template: :{line}: {exc.msg}") from None

    def execute(self, data: Any, funcs: Mapping[str, Callable[..., Any]] | None = None,
                *, partial: bool = False) -> str:
        """Render with *data* as ``.`` and ``$``.

        *funcs* replaces already known functions for this run (Docker swaps in
        pass-through functions to render table headers). With *partial*, an
        execution error returns the text written so far instead of raising,
        as Docker does for table headers.
        """
        table = self._funcs
        if funcs:
            unknown = set(funcs) - set(table)
            if unknown:
                raise InvalidConfig(f"template: functions not in the template: {sorted(unknown)}")
            table = {**table, **{k: _custom(f) for k, f in funcs.items()}}
        out: list[str] = []
        try:
            _Exec(data, table, out).walk(data, self._nodes)
        except _ExecError as exc:
            if partial:
                return "".join(out)
            line, col = _location(self.source, exc.node.pos)
            raise InvalidConfig(f'template parsing error: template: :{line}:{col}: executing "" '
                                f"at <{exc.node.text}>: {exc.msg}") from None
        return "".join(out)


def compile(template: str, funcs: Mapping[str, Callable[..., Any]] | None = None) -> Template:
    """Parse *template* (Go text/template syntax); raises InvalidConfig when it is bad."""
    return Template(template, funcs)


def render(template: str, data: Any) -> str:
    """Parse *template* and execute it once with *data*."""
    return Template(template).execute(data)
