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

This module holds the executor and the public API; Go-style value printing,
JSON and the built-in functions are in :mod:`netmgr.cli.gofmt`, the lexer and
parser in :mod:`netmgr.cli.goparse`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from netmgr.cli.gofmt import (
    ANY,
    BUILTINS,
    INT,
    LIST,
    MISSING,
    STR,
    Func,
    FuncError,
    format_value,
    go_type,
    is_true,
    sorted_keys,
    to_json,
)
from netmgr.cli.goparse import Arg, Branch, Command, ParseError, Parser, Pipe
from netmgr.errors import InvalidConfig

__all__ = ["Template", "compile", "format_value", "is_true", "render", "to_json"]

_NOFINAL: Any = object()  # no value piped in from a previous command


# ---------------------------------------------------------------- execution


class _ExecError(Exception):
    def __init__(self, msg: str, node: Arg | Command | Pipe) -> None:
        super().__init__(msg)
        self.msg, self.node = msg, node


class _Jump(Exception):
    """{{break}} or {{continue}}, caught by the enclosing range."""


class _Exec:
    """One execution of a template: the output, the variable stack, the functions."""

    def __init__(self, data: Any, funcs: Mapping[str, Func], out: list[str]) -> None:
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

    def if_with(self, dot: Any, node: Branch) -> None:
        assert node.pipe is not None
        value = self.pipeline(dot, node.pipe)
        if is_true(value):
            self.walk(value if node.kind == "with" else dot, node.body)
        elif node.else_body is not None:
            self.walk(dot, node.else_body)

    def range_(self, dot: Any, node: Branch) -> None:
        pipe = node.pipe
        assert pipe is not None
        value = self.pipeline(dot, pipe, declare=False)
        if isinstance(value, (list, tuple)):
            items: list[tuple[Any, Any]] = list(enumerate(value))
        elif isinstance(value, Mapping):
            items = [(k, value[k]) for k in sorted_keys(value)]
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

    def pipeline(self, dot: Any, pipe: Pipe, declare: bool = True) -> Any:
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

    def variable(self, name: str, node: Arg | Pipe) -> list[Any]:
        for entry in reversed(self.vars):
            if entry[0] == name:
                return entry
        raise _ExecError(f"undefined variable: {name}", node)

    def command(self, dot: Any, cmd: Command, final: Any) -> Any:
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

    def operand(self, dot: Any, node: Arg, args: list[Arg], final: Any) -> Any:
        """Evaluate a non-function operand; *args*/*final* only matter to its last field."""
        kind = node.kind
        if kind == "const":
            return node.value
        if kind == "dot":
            return dot
        if kind == "nil":
            return None
        if kind == "ident":
            return self.call(dot, node, Command([node], node.pos, node.text), _NOFINAL)
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

    def field(self, receiver: Any, name: str, node: Arg, has_args: bool) -> Any:
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

    def call(self, dot: Any, ident: Arg, cmd: Command, final: Any) -> Any:
        name, args = ident.value, cmd.args[1:]
        func = self.funcs[name]
        count = len(args) + (final is not _NOFINAL)
        want = len(func.params)
        if count < want or (func.variadic is None and count > want):
            least = "at least " if func.variadic else ""
            raise _ExecError(f"wrong number of args for {name}: want {least}{want} got {count}",
                             ident)
        types = [*func.params, *[func.variadic or ANY] * (count - want)]
        if name in ("and", "or"):
            return self.and_or(dot, name == "and", args, final)
        values = [self.arg(dot, a, t) for a, t in zip(args, types)]
        if final is not _NOFINAL:
            values.append(self.check(final, types[-1], cmd))
        try:
            return func.fn(*values)
        except (FuncError, TypeError, ValueError, KeyError, IndexError) as exc:
            raise _ExecError(f"error calling {name}: {exc}", cmd) from None

    def and_or(self, dot: Any, is_and: bool, args: list[Arg], final: Any) -> Any:
        value = MISSING
        for node in args:
            value = self.arg(dot, node, ANY)
            if is_true(value) != is_and:
                return value
        return final if final is not _NOFINAL else value

    def arg(self, dot: Any, node: Arg, typ: str) -> Any:
        """Evaluate a function argument and check it against the parameter type."""
        if node.kind == "nil":
            if typ != ANY:
                raise _ExecError(f"cannot assign nil to {typ}", node)
            return None
        if node.kind != "const":
            return self.check(self.operand(dot, node, [node], _NOFINAL), typ, node)
        value = node.value
        if typ == STR and not isinstance(value, str):
            raise _ExecError(f"expected string; found {node.text}", node)
        if typ == INT:
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if not isinstance(value, int) or isinstance(value, bool):
                raise _ExecError(f"expected integer; found {node.text}", node)
        if typ == LIST:
            raise _ExecError(f"can't handle {node.text} for arg of type {typ}", node)
        return value

    def check(self, value: Any, typ: str, node: Arg | Command) -> Any:
        if typ == ANY:
            return None if value is MISSING else value
        if value is MISSING:
            raise _ExecError(f"invalid value; expected {typ}", node)
        ok = {STR: isinstance(value, str), LIST: isinstance(value, (list, tuple)),
              INT: isinstance(value, int) and not isinstance(value, bool)}[typ]
        if not ok:
            raise _ExecError(f"wrong type for value; expected {typ}; got {go_type(value)}", node)
        return value


# ---------------------------------------------------------------- public API


def _location(src: str, pos: int) -> tuple[int, int]:
    return src.count("\n", 0, pos) + 1, pos - (src.rfind("\n", 0, pos) + 1)


def _custom(fn: Callable[..., Any]) -> Func:
    return Func(fn, (), ANY)


class Template:
    """A parsed template; :meth:`execute` it with data as many times as needed."""

    def __init__(self, source: str, funcs: Mapping[str, Callable[..., Any]] | None = None) -> None:
        """Parse *source*; *funcs* adds or replaces functions (plain Python callables)."""
        self.source = source
        self._funcs = {**BUILTINS, **{k: _custom(f) for k, f in (funcs or {}).items()}}
        try:
            self._nodes = Parser(source, self._funcs).parse()
        except ParseError as exc:
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
