"""Printing: answers (streamed markdown on a TTY, plain text when piped),
tables, JSON, notices and errors. Data goes to stdout, everything else to stderr.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mecli.environment import Environment


class Printer:
    def __init__(self, env: Environment):
        self.env = env
        self._console = None
        self._err_console = None

    @property
    def rich(self) -> bool:
        return self.env.color

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.env.stdout, force_terminal=self.rich,
                                    no_color=not self.rich, highlight=False, soft_wrap=not self.rich)
        return self._console

    @property
    def err_console(self):
        if self._err_console is None:
            from rich.console import Console

            color = "NO_COLOR" not in self.env.environ and _isatty(self.env.stderr)
            self._err_console = Console(file=self.env.stderr, force_terminal=color,
                                        no_color=not color, highlight=False, soft_wrap=True)
        return self._err_console

    # --- plain lines -------------------------------------------------------------

    def out(self, text: str = "") -> None:
        self.env.stdout.write(text + "\n")
        self.env.stdout.flush()

    def notice(self, text: str) -> None:
        """A one-line message for the user, on stderr."""
        if self.err_console.is_terminal:
            self.err_console.print(f"[dim]{_escape(text)}[/dim]")
        else:
            self.env.stderr.write(text + "\n")
            self.env.stderr.flush()

    def error(self, text: str) -> None:
        line = text.strip().splitlines()[0] if text.strip() else "error"
        if self.err_console.is_terminal:
            self.err_console.print(f"[bold red]me: error:[/bold red] {_escape(line)}")
        else:
            self.env.stderr.write(f"me: error: {line}\n")
            self.env.stderr.flush()

    def json(self, doc: Any) -> None:
        self.env.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2, default=str) + "\n")
        self.env.stdout.flush()

    def markdown(self, text: str) -> None:
        if self.rich:
            from rich.markdown import Markdown

            self.console.print(Markdown(text))
        else:
            self.out(text)

    def table(self, columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
        """A rich table on a TTY; tab-separated lines with a header when piped."""
        if self.rich:
            from rich.table import Table

            table = Table(title=title, show_lines=False, header_style="bold")
            for c in columns:
                table.add_column(c, overflow="fold")
            for row in rows:
                table.add_row(*["" if v is None else _escape(str(v)) for v in row])
            self.console.print(table)
        else:
            self.out("\t".join(columns))
            for row in rows:
                self.out("\t".join("" if v is None else str(v).replace("\n", " ").replace("\t", " ")
                                   for v in row))

    def stream(self) -> "AnswerStream":
        return AnswerStream(self) if self.rich else PlainStream(self.env)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class PlainStream:
    """Piped or NO_COLOR: the answer's text as it comes, nothing else."""

    def __init__(self, env: Environment):
        self.env = env
        self.text = ""

    def __enter__(self):
        return self

    def write(self, piece: str) -> None:
        self.text += piece
        self.env.stdout.write(piece)
        self.env.stdout.flush()

    def __exit__(self, *exc):
        if self.text and not self.text.endswith("\n"):
            self.env.stdout.write("\n")
        self.env.stdout.flush()
        return False


FENCE = re.compile(r"^\s*(```|~~~)", re.M)


class AnswerStream:
    """Streams markdown smoothly however long the answer gets.

    Finished blocks (text before a blank line outside a code fence) are printed
    once, for good; only the block being written is re-rendered live. Cost per
    chunk stays proportional to one block, not to the whole answer.
    """

    def __init__(self, printer: Printer):
        self.printer = printer
        self.console = printer.console
        self.text = ""
        self.pending = ""
        self.live = None

    def __enter__(self):
        from rich.live import Live

        self.live = Live(console=self.console, auto_refresh=True, refresh_per_second=12,
                         transient=True, vertical_overflow="visible")
        self.live.__enter__()
        return self

    def _split_finished(self) -> tuple[str, str]:
        """(finished blocks, the block still being written)."""
        cut = -1
        in_fence = False
        pos = 0
        for line in self.pending.splitlines(keepends=True):
            if FENCE.match(line):
                in_fence = not in_fence
            pos += len(line)
            if not in_fence and line.strip() == "" and line.endswith("\n") and pos < len(self.pending):
                cut = pos
        if cut <= 0:
            return "", self.pending
        return self.pending[:cut], self.pending[cut:]

    def write(self, piece: str) -> None:
        from rich.markdown import Markdown

        self.text += piece
        self.pending += piece
        done, rest = self._split_finished()
        if done.strip():
            self.live.update("")
            self.live.refresh()
            self.console.print(Markdown(done))
            self.pending = rest
        self.live.update(Markdown(self.pending))

    def __exit__(self, *exc):
        from rich.markdown import Markdown

        self.live.update("")
        self.live.__exit__(None, None, None)
        if self.pending.strip():
            self.console.print(Markdown(self.pending))
        return False
