"""Print docs/cli.md, the CLI reference, from the `digitrec` command's own argparse parser (digitrec.cli._parser).

    python tools/cli_reference.py > docs/cli.md      # regenerate after changing a command or an option
    python tools/cli_reference.py --check            # exit 1 if docs/cli.md is not what the parser says

tests/test_docs.py regenerates it in process and compares, so the page cannot drift from the code.  The
output depends only on the parser (no terminal width, no Python-version formatting of argparse's help).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"

HEADER = """\
# CLI reference

Every `digitrec` command and option. This page is generated from the command's own parser
(`digitrec.cli._parser`) by `python tools/cli_reference.py > docs/cli.md`; `tests/test_docs.py` fails when it
is out of date. `digitrec COMMAND --help` prints the same. For what the commands do and the figures they give,
see the [README](../README.md), [serving](serving.md) and [benchmarks](benchmarks.md).
"""


def _text(text: object) -> str:
    """Plain help text as markdown: angle brackets shown, not taken for HTML."""
    return str(text).replace("<", "&lt;").replace(">", "&gt;")


def _cell(text: object) -> str:
    return _text(text).replace("|", "\\|").replace("\n", " ")


def _value(action: argparse.Action) -> str:
    """What an option takes: its choices, its metavar, or nothing for a flag."""
    if action.nargs == 0:
        return ""
    if action.choices:
        return "`" + "\\|".join(str(c) for c in action.choices) + "`"
    return "`" + (action.metavar or action.dest.upper()) + "`"


def _default(action: argparse.Action) -> str:
    default = action.default
    if action.required:
        return "required"
    if default is None or default is False or default is argparse.SUPPRESS or default == [] or action.nargs == 0:
        return ""
    return f"`{default}`"


def _positional(action: argparse.Action) -> str:
    name = action.metavar or action.dest
    return {None: name, "?": f"[{name}]", "*": f"[{name} ...]", "+": f"{name} [{name} ...]"}.get(action.nargs, name)


def _options_table(actions: list[argparse.Action]) -> list[str]:
    rows = ["| option | value | default | what it does |", "|---|---|---|---|"]
    for a in actions:
        help = a.help or ""
        if isinstance(a, argparse._AppendAction):
            help += " (repeatable)" if "repeatable" not in help else ""
        rows.append(f"| {_cell(', '.join(f'`{o}`' for o in a.option_strings))} | {_value(a)} | {_cell(_default(a))} "
                    f"| {_cell(help)} |")
    return rows


def _visible(actions: list[argparse.Action], skip: set[str]) -> list[argparse.Action]:
    return [a for a in actions if not isinstance(a, argparse._HelpAction) and a.help != argparse.SUPPRESS
            and not isinstance(a, argparse._SubParsersAction) and not set(a.option_strings) & skip]


def reference(parser: argparse.ArgumentParser | None = None) -> str:
    """The markdown of docs/cli.md."""
    if parser is None:
        from digitrec.cli import _parser

        parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    top = _visible(parser._actions, set())
    lines = [HEADER, _text(parser.description), "",
             "```", f"{parser.prog} [{' | '.join(o for a in top for o in a.option_strings)}] COMMAND ...", "```", ""]
    lines += ["Options of `digitrec` itself (`--debug` also works after any command):", ""]
    lines += _options_table(top) + [""]
    lines += ["| command | what it does |", "|---|---|"]
    lines += [f"| [`{name}`](#{name}) | {_cell(helps.get(name, ''))} |" for name in sub.choices] + [""]
    shared = {o for a in top for o in a.option_strings}
    for name, command in sub.choices.items():
        actions = _visible(command._actions, shared)
        positionals = [a for a in actions if not a.option_strings]
        options = [a for a in actions if a.option_strings]
        synopsis = " ".join([f"{parser.prog} {name}"] + (["[options]"] if options else [])
                            + [_positional(a) for a in positionals])
        lines += [f"## {name}", "", _text(command.description or helps.get(name, "")), "", "```", synopsis, "```", ""]
        if positionals:
            lines += ["| argument | what it is |", "|---|---|"]
            lines += [f"| `{_positional(a)}` | {_cell(a.help or '')} |" for a in positionals] + [""]
        if options:
            lines += _options_table(options) + [""]
        if command.epilog:
            body = command.epilog.removeprefix("examples:\n").rstrip()
            lines += ["Examples:", "", "```sh"] + [line.removeprefix("  ") for line in body.splitlines()] + ["```", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--check", action="store_true", help=f"compare with {DOC} instead of printing")
    args.add_argument("--write", action="store_true", help=f"write {DOC}")
    a = args.parse_args(argv)
    text = reference()
    if a.check:
        same = DOC.is_file() and DOC.read_text() == text
        print(f"{DOC}: {'up to date' if same else 'out of date: python tools/cli_reference.py --write'}")
        return 0 if same else 1
    if a.write:
        DOC.write_text(text)
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
