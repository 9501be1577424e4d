"""Lexer and parser for :mod:`netmgr.cli.gotemplate`, after Go's ``text/template/parse``.

:func:`_scan` cuts the source into text and ``{{...}}`` actions (honouring
``{{-``/``-}}`` trimming and comments) and lexes each action into tokens;
:class:`Parser` turns them into a list of nodes: plain strings for text and
:class:`Branch` for actions and ``if``/``with``/``range``, whose pipelines are
:class:`Pipe` nodes made of :class:`Command` and :class:`Arg` nodes. Like Go's
parser it rejects unknown functions and undeclared variables up front. Errors
raise :class:`ParseError` with Go's wording and the offset where they occur.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from netmgr.cli.gofmt import Func, go_quote

__all__ = ["Arg", "Branch", "Command", "ParseError", "Parser", "Pipe"]


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


class ParseError(Exception):
    """A template syntax error at index *pos* of the source."""

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
        return go_quote(self.text[:10]) + "..." if len(self.text) > 10 else go_quote(self.text)


class _LexError(ParseError):
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
        raise ParseError("invalid syntax", pos) from None
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
        raise ParseError(f"illegal number syntax: {go_quote(text)}", pos) from None


def _token_value(kind: str, text: str, pos: int) -> Any:
    if kind == "string":
        return _unquote(text[1:-1], pos)
    if kind == "raw":
        return text[1:-1].replace("\r", "")
    if kind == "char":
        s = _unquote(text[1:-1], pos)
        if len(s) != 1:
            raise ParseError(f"malformed character constant: {text}", pos)
        return ord(s)
    if kind == "number":
        return _parse_number(text, pos)
    return text[1:] if kind == "field" else text


def _lex_action(src: str, i: int) -> tuple[list[_Tok], int, bool]:
    """Tokens of one action from *i*; returns (tokens, position after "}}", right-trim)."""
    toks: list[_Tok] = []
    try:
        return _lex_tokens(src, i, toks)
    except ParseError as exc:
        raise _LexError(exc.msg, exc.pos, toks) from None


def _sign_error(src: str, i: int) -> str:
    j = i + 1 + (src[i + 1:i + 2] == ".")
    if j < len(src) and src[j].isalnum():
        return f"bad number syntax: {go_quote(src[i:j + 1])}"
    return f"illegal number syntax: {go_quote(src[i])}"


def _lex_tokens(src: str, i: int, toks: list[_Tok]) -> tuple[list[_Tok], int, bool]:
    n = len(src)
    while True:
        if i >= n:
            raise ParseError("unclosed action", i)
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
                raise ParseError(f"unterminated {what[c]}", i)
            if c in "+-":
                raise ParseError(_sign_error(src, i), i)
            if c.isascii() and c.isprintable():
                toks.append(_Tok("char", c, i, i + 1, c))
                i += 1
                continue
            raise ParseError(f"unrecognized character in action: U+{ord(c):04X} '{c}'", i)
        kind, text, j = m.lastgroup or "", m.group(), m.end()
        kind = "string" if kind == "raw" else kind
        nxt = src[j] if j < n else " "
        if kind == "number" and (nxt.isalnum() or nxt in "._"):
            raise ParseError(f"bad number syntax: {go_quote(src[i:j + 1])}", i)
        if kind in ("field", "ident", "var") and nxt not in _SPACE + ".,|:()}":
            raise ParseError(f"bad character U+{ord(nxt):04X} '{nxt}'", j)
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
class Arg:
    """An operand: kind is field, var, chain, ident, const, dot, nil or pipe."""

    kind: str
    pos: int
    text: str
    names: tuple[str, ...] = ()  # field chain (for var: the variable first)
    value: Any = None  # const value, ident name, sub-pipe or chained operand


@dataclass(slots=True)
class Command:
    """One command of a pipeline: a function or operand and its arguments."""

    args: list[Arg]
    pos: int
    text: str


@dataclass(slots=True)
class Pipe:
    """A pipeline: optional variable declarations, then commands joined by ``|``."""

    decl: list[str]
    is_assign: bool
    cmds: list[Command]
    pos: int
    text: str


@dataclass(slots=True)
class Branch:
    """A node of the tree: an action, if/with/range with its bodies, or break/continue."""

    kind: str  # if, with, range, action, break, continue
    pipe: Pipe | None
    body: list[Any]
    else_body: list[Any] | None = None


class _Cursor:
    """Walks the tokens of one action; peeking past the end gives the closing token."""

    def __init__(self, toks: list[_Tok]) -> None:
        self.toks, self.i = toks, 0

    def peek(self) -> _Tok:
        tok = self.toks[min(self.i, len(self.toks) - 1)]
        if tok.kind == "error":  # lexical errors surface in source order, as in Go
            raise ParseError(tok.val, tok.pos)
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


class Parser:
    """Builds the node list; checks functions and variables as Go's parser does."""

    def __init__(self, src: str, funcs: Mapping[str, Func]) -> None:
        self.src, self.funcs = src, funcs
        self.segs = _scan(src)
        self.i, self.vars, self.range_depth = 0, ["$"], 0

    def parse(self) -> list[Any]:
        """The whole template's nodes; a stray {{end}} or {{else}} is an error."""
        nodes, stop, cur = self.item_list()
        if cur is not None:
            raise ParseError(f"unexpected {{{{{stop}}}}}", cur.toks[0].pos)
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

    def action(self, cur: _Cursor, first: _Tok) -> Branch:
        """One action that is not {{end}}/{{else}}: a control, break/continue or a pipeline."""
        word = first.val if first.kind == "ident" else ""
        if word in ("if", "with", "range"):
            cur.next()
            return self.control(word, cur)
        if word in ("break", "continue"):
            if not self.range_depth:
                raise ParseError(f"{{{{{word}}}}} outside {{{{range}}}}", first.pos)
            cur.next()
            self.expect_end(cur, word)
            return Branch(word, None, [])
        if word in ("define", "template", "block"):
            raise ParseError(f"{{{{{word}}}}} is not supported", first.pos)
        return Branch("action", self.pipeline(cur, "command", "eof"), [])

    def expect_end(self, cur: _Cursor, context: str) -> None:
        """Require the closing ``}}`` next; *context* names the action in the error."""
        tok = cur.next_non_space()
        if tok.kind != "eof":
            raise ParseError(f"unexpected {tok.show()} in {context}", tok.pos)

    def control(self, kind: str, cur: _Cursor) -> Branch:
        """An if/with/range from its pipeline to its {{end}}, with any else or else-if."""
        mark = len(self.vars)
        pipe = self.pipeline(cur, kind, "eof")
        self.range_depth += kind == "range"
        body, stop, end = self.item_list()
        self.range_depth -= kind == "range"
        node = Branch(kind, pipe, body)
        if end is None:
            raise ParseError("unexpected EOF", len(self.src))
        if stop == "else":
            nxt = end.peek_non_space()
            if kind != "range" and nxt.kind == "ident" and nxt.val == kind:
                end.next()
                node.else_body = [self.control(kind, end)]  # "else if": one {{end}} closes both
                del self.vars[mark:]
                return node
            if nxt.kind != "eof":
                raise ParseError(f"unexpected {nxt.show()} in else", nxt.pos)
            node.else_body, stop, end = self.item_list()
            if end is None:
                raise ParseError("unexpected EOF", len(self.src))
            if stop != "end":
                raise ParseError(f"expected end; found {{{{{stop}}}}}", end.toks[0].pos)
        del self.vars[mark:]
        return node

    def pipeline(self, cur: _Cursor, context: str, end: str) -> Pipe:
        """Declarations then commands up to the *end* token (``}}`` or ``)``)."""
        start = cur.peek_non_space()
        pipe = Pipe([], False, [], start.pos, "")
        self.declarations(cur, pipe, context)
        while True:
            tok = cur.next_non_space()
            if tok.kind == end:
                break
            if tok.kind == "eof":
                raise ParseError("unclosed left paren", tok.pos)
            operand = tok.kind in ("ident", "dot", "field", "var", "number", "string", "lparen")
            if not operand or (tok.kind == "ident" and tok.val in _KEYWORDS - {"nil"}):
                raise ParseError(f"unexpected {tok.show()} in {context}", tok.pos)
            cur.i -= 1
            pipe.cmds.append(self.command(cur))
        if not pipe.cmds:
            raise ParseError(f"missing value for {context}", tok.pos)
        for i, cmd in enumerate(pipe.cmds[1:]):
            if cmd.args[0].kind in ("const", "dot", "nil"):
                raise ParseError(f"non executable command in pipeline stage {i + 2}", cmd.pos)
        pipe.text = self.src[start.pos:pipe.cmds[-1].pos + len(pipe.cmds[-1].text)]
        return pipe

    def declarations(self, cur: _Cursor, pipe: Pipe, context: str) -> None:
        """Read ``$x :=``, ``$x =`` or range's ``$k, $v :=`` into *pipe*, if present."""
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
                raise ParseError("range can only initialize variables", after.pos)
            raise ParseError(f"too many declarations in {context}", after.pos)

    def command(self, cur: _Cursor) -> Command:
        """Operands up to ``|``, ``)`` or ``}}``."""
        cmd = Command([], cur.peek_non_space().pos, "")
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
                raise ParseError(f"unexpected {tok.show()} in operand", tok.pos)
            break
        if not cmd.args:
            raise ParseError("empty command", cmd.pos)
        cmd.text = self.src[cmd.pos:end]
        return cmd

    def operand(self, cur: _Cursor) -> Arg | None:
        """A term and any field chain after it (``.A.B``, ``$x.A``, ``(pipe).A``)."""
        node = self.term(cur)
        if node is None or cur.peek().kind != "field":
            return node
        names, chain_pos = [], cur.peek().pos
        while cur.peek().kind == "field":
            names.append(cur.next().val)
        text = self.src[node.pos:cur.toks[cur.i - 1].end]
        if node.kind in ("field", "var"):
            # Go reports errors at the first chained field
            return Arg(node.kind, chain_pos, text, node.names + tuple(names))
        if node.kind in ("const", "dot", "nil"):
            raise ParseError(f"unexpected . after term {go_quote(node.text)}", node.pos)
        return Arg("chain", node.pos, text, tuple(names), node)

    def term(self, cur: _Cursor) -> Arg | None:
        """A single term, or None (the token left unread) when the next token is not one."""
        tok = cur.next_non_space()
        kind = tok.kind
        if kind == "ident" and tok.val in ("true", "false"):
            return Arg("const", tok.pos, tok.text, value=tok.val == "true")
        if kind == "ident" and tok.val == "nil":
            return Arg("nil", tok.pos, tok.text)
        if kind == "ident" and tok.val not in _KEYWORDS:
            if tok.val not in self.funcs:
                raise ParseError(f"function {go_quote(tok.val)} not defined", tok.pos)
            return Arg("ident", tok.pos, tok.text, value=tok.val)
        if kind == "var":
            if tok.val not in self.vars:
                raise ParseError(f"undefined variable {go_quote(tok.val)}", tok.pos)
            return Arg("var", tok.pos, tok.text, (tok.val,))
        if kind in ("dot", "field"):
            return Arg(kind, tok.pos, tok.text, (tok.val,) if kind == "field" else ())
        if kind in ("number", "string"):
            return Arg("const", tok.pos, tok.text, value=tok.val)
        if kind == "lparen":
            pipe = self.pipeline(cur, "parenthesized pipeline", "rparen")
            return Arg("pipe", tok.pos, self.src[tok.pos:cur.toks[cur.i - 1].end], value=pipe)
        cur.i -= 1
        return None
