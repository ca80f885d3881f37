"""A router-style command language for device consoles (issue 8): a tree of words.

A :class:`CommandTree` holds commands as sequences of words (``show counters``,
``no shutdown log-transfer``); each leaf has a handler ``handler(args) -> str``
and a one-line help. Typing follows what operators of network gear expect:

* **abbreviations** -- any unambiguous prefix of a word (``sho cou`` is ``show
  counters``); an ambiguous one is an error that lists the candidates, unless the
  tree says which word it means (:meth:`CommandTree.prefer`: ``sh`` is ``show``);
* ``?`` -- at the end of a line, what may come next there (``show ?``); ``help``
  lists every command;
* **errors name the bad word**, with a caret under it:
  ``% unknown word "cuonters" after "show"; expected one of: config, counters...``;
* a leaf may take free arguments (``debug log-transfer on|off`` takes a word from
  a fixed set; ``clear counters`` none).

Output helpers: :func:`columns` aligns rows under headings. The tree knows nothing
about transports (see :mod:`rcn.console.protocol`) or devices (the daemons build
their trees from their own state objects).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence


class ConsoleError(Exception):
    """What the operator typed cannot be run; the message says why (shown with ``% ``)."""


@dataclass
class _Node:
    word: str
    help: str = ""
    handler: Callable[[list[str]], str] | None = None
    choices: tuple[str, ...] | None = None      # allowed argument words (None: no argument)
    children: dict[str, "_Node"] = field(default_factory=dict)


class CommandTree:
    def __init__(self):
        self.root = _Node("")
        self.preferred: dict[str, str] = {}     # an ambiguous prefix operators mean one way

    def prefer(self, abbreviation: str, word: str) -> None:
        """``abbreviation`` means ``word`` where both would match (``sh`` is ``show``)."""
        self.preferred[abbreviation] = word

    def add(self, words: str, handler: Callable[[list[str]], str], help: str = "",
            choices: Sequence[str] | None = None) -> None:
        """Register ``words`` (space-separated) -> ``handler(args)``; ``choices``: the one
        argument it takes must be one of these (abbreviations allowed)."""
        node = self.root
        for word in words.split():
            node = node.children.setdefault(word, _Node(word))
        node.handler, node.help = handler, help
        node.choices = tuple(choices) if choices is not None else None

    # -- running a line ------------------------------------------------------------------
    def run(self, line: str) -> str:
        """The output of ``line`` (``ConsoleError`` when it cannot run)."""
        words = line.split()
        if not words:
            return ""
        if words[-1] == "?" or words[-1].endswith("?"):
            return self._question(words)
        if _match(words[0], ["help"]) == "help" and len(words) == 1:
            return self.help()
        node, path = self.root, []
        for i, word in enumerate(words):
            if node.handler is not None and node.choices is not None and not node.children:
                return node.handler([self._choice(node, word, path)] + words[i + 1:])
            if not node.children:
                raise ConsoleError(f'unexpected word "{word}" after "{" ".join(path)}"')
            name = self._child(node, word, path)
            node = node.children[name]
            path.append(name)
        if node.handler is None:
            raise ConsoleError(f'"{" ".join(path)}" is incomplete; next: '
                               + ", ".join(sorted(node.children)))
        if node.choices is not None:
            raise ConsoleError(f'"{" ".join(path)}" needs one of: {", ".join(node.choices)}')
        return node.handler([])

    def _child(self, node: _Node, word: str, path: list[str]) -> str:
        matches = [name for name in node.children if name.startswith(word.lower())]
        if word.lower() in node.children:
            return word.lower()
        where = f' after "{" ".join(path)}"' if path else ""
        if not matches:
            raise ConsoleError(f'unknown word "{word}"{where}; expected one of: '
                               + ", ".join(sorted(node.children)))
        if len(matches) > 1 and self.preferred.get(word.lower()) in matches:
            return self.preferred[word.lower()]
        if len(matches) > 1:
            raise ConsoleError(f'ambiguous word "{word}"{where}: ' + ", ".join(sorted(matches)))
        return matches[0]

    def _choice(self, node: _Node, word: str, path: list[str]) -> str:
        choice = _match(word, node.choices)
        if choice is None:
            raise ConsoleError(f'bad value "{word}" for "{" ".join(path)}"; expected one of: '
                               + ", ".join(node.choices))
        return choice

    def _question(self, words: list[str]) -> str:
        head = words[:-1] + ([words[-1][:-1]] if words[-1] != "?" else [])
        partial = words[-1][:-1] if words[-1] != "?" else ""
        node, path = self.root, []
        for word in head[:-1] if partial else head:
            name = self._child(node, word, path)
            node, path = node.children[name], path + [name]
        options = [(n, c.help) for n, c in sorted(node.children.items())
                   if n.startswith(partial)]
        if node.choices and not node.children:
            options = [(c, "") for c in node.choices if c.startswith(partial)]
        if node.handler is not None and not partial and node.choices is None:
            options.append(("<cr>", "run it"))
        return columns([[name, text] for name, text in options], None)

    def help(self) -> str:
        rows = []

        def walk(node: _Node, path: list[str]):
            if node.handler is not None:
                suffix = f" {'|'.join(node.choices)}" if node.choices else ""
                rows.append([" ".join(path) + suffix, node.help])
            for name, child in sorted(node.children.items()):
                walk(child, path + [name])
        walk(self.root, [])
        return columns(rows, None)


def _match(word: str, choices: Sequence[str]) -> str | None:
    word = word.lower()
    if word in choices:
        return word
    found = [c for c in choices if c.startswith(word)]
    return found[0] if len(found) == 1 else None


def columns(rows: Sequence[Sequence[object]], headings: Sequence[str] | None) -> str:
    """Rows aligned in columns, under ``headings`` if given."""
    table = [list(map(str, headings))] if headings else []
    table += [[str(cell) for cell in row] for row in rows]
    if not table:
        return ""
    widths = [max(len(row[i]) for row in table if i < len(row))
              for i in range(max(len(r) for r in table))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in table)


def add_counters(tree: CommandTree, counters_now, help: str) -> None:
    """``show counters`` (``counters_now()`` less the values at the last clear) and ``clear
    counters``, which only moves the console's baseline: /metrics keeps counting."""
    baseline: dict[str, int] = {}

    def show(args):
        return columns([[k, v - baseline.get(k, 0)] for k, v in sorted(counters_now().items())],
                       ["counter", "value"])

    def clear(args):
        baseline.clear()
        baseline.update(counters_now())
        return "counters cleared (console only; /metrics keeps counting)"
    tree.add("show counters", show, help)
    tree.add("clear counters", clear, "count from zero again (console only)")


def add_shutdown(tree: CommandTree, interface: str, svc) -> None:
    """``shutdown INTERFACE`` / ``no shutdown INTERFACE`` over a Twisted service (stopped and
    started again: a socket closed and reopened)."""
    def shutdown(args):
        if not svc.running:
            return f"{interface} is already down"
        svc.stopService()
        return f"{interface} interface administratively down"

    def no_shutdown(args):
        if svc.running:
            return f"{interface} is already up"
        svc.startService()
        return f"{interface} interface up"
    tree.add(f"shutdown {interface}", shutdown, f"close the {interface} socket")
    tree.add(f"no shutdown {interface}", no_shutdown, "open it again")
