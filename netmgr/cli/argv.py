"""Pieces of the command line that argparse leaves to us.

* ``command()``: the container command of ``run``/``exec``/``lab exec``. Those take it with
  ``argparse.REMAINDER``, which (on Python 3.11) keeps a ``--`` that ends the options; as in every POSIX tool
  and in Docker, ``--`` is not part of the command.
* ``not_utf8()``: an argument that is not valid UTF-8 (Python hands such bytes over as surrogate escapes).
  netmgr's API carries text (protobuf strings), so the CLI refuses it with one line instead of failing to
  encode it later; a container command that needs such bytes can get them from a script inside the container.
* ``one_line()``: an error message as one terminal line: a user's value echoed in it cannot break the line
  (``\\n``, ``\\x85``, ``\\u2028``…) or send escape sequences to the terminal.
* ``global_flags()``: the global options (``--debug``, ``--json``) as typed before the subcommand, known even
  when parsing fails and never taken from a container's command line (``netmgr run sh -c 'x --json'``).
"""

from __future__ import annotations

_TAKES_VALUE = {"-H", "--host"}


def command(argv: list[str]) -> list[str]:
    """The command after the options: ``argv`` without one leading ``--``."""
    return argv[1:] if argv[:1] == ["--"] else argv


def not_utf8(argv: list[str]) -> str | None:
    """The first argument that is not valid UTF-8, shown with its bad bytes escaped; None if all are."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return None


def one_line(text: str) -> str:
    """``text`` with control and line-separator characters escaped (``\\n``, ``\\x1b``, ``\\u2028``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def global_flags(argv: list[str]) -> set[str]:
    """The flags before the subcommand (the first word that is not an option or an option's value)."""
    flags: set[str] = set()
    it = iter(argv)
    for tok in it:
        if tok == "--" or not tok.startswith("-"):
            break
        flags.add(tok.partition("=")[0])
        if tok in _TAKES_VALUE:
            next(it, None)
    return flags
