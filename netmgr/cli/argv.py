"""Pieces of the command line that argparse leaves to us.

* ``command()``: the container command of ``run``/``exec``/``lab exec``. Those take it with
  ``argparse.REMAINDER``, which (on Python 3.11) keeps a ``--`` that ends the options; as in every POSIX tool
  and in Docker, ``--`` is not part of the command.
* ``global_flags()``: the global options (``--debug``, ``--json``) as typed before the subcommand, known even
  when parsing fails and never taken from a container's command line (``netmgr run sh -c 'x --json'``).
"""

from __future__ import annotations

_TAKES_VALUE = {"-H", "--host"}


def command(argv: list[str]) -> list[str]:
    """The command after the options: ``argv`` without one leading ``--``."""
    return argv[1:] if argv[:1] == ["--"] else argv


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
