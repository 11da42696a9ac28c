"""Printing: answers (streamed markdown on a TTY, plain text when piped),
tables, JSON, notices and errors. Data goes to stdout, everything else to stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from typing import Any

from mecli.environment import Environment


class Printer:
    def __init__(self, env: Environment):
        self.env = env
        self._console = None
        self._err_console = None
        self._stream: AnswerStream | None = None  # the answer being streamed, if any

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

    def _paused(self):
        """Around anything printed while an answer streams: its live region steps aside."""
        return self._stream.paused() if self._stream is not None else contextlib.nullcontext()

    def notice(self, text: str) -> None:
        """A one-line message for the user, on stderr."""
        with self._paused():
            self._notice(text)

    def _notice(self, text: str) -> None:
        if self.err_console.is_terminal:
            self.err_console.print(f"[dim]{_escape(text)}[/dim]")
        else:
            self.env.stderr.write(text + "\n")
            self.env.stderr.flush()

    def error(self, text: str) -> None:
        line = text.strip().splitlines()[0] if text.strip() else "error"
        with self._paused():
            self._error(line)

    def _error(self, line: str) -> None:
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

    def conversations(self, rows: list[dict]) -> None:
        """The conversation list of `me history` and the REPL's /history."""
        if not rows:
            self.notice("no conversations yet")
            return
        self.table(["id", "updated", "messages", "title"],
                   [[r["id"], r["updated_at"].replace("T", " ")[:16], r["messages"], r["title"]]
                    for r in rows])

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


# A fence opens a code block: ``` or ~~~ (3 or more), indented at most 3 spaces.
FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")
# The first line of a list item: -, + or *, or 1. / 1), then a space (or nothing).
LIST_ITEM = re.compile(r"^ {0,3}(?:[-+*]|\d{1,9}[.)])(?:[ \t]|$)")
LEAF_BLOCKS = ("paragraph_open", "heading_open", "fence", "code_block", "hr", "html_block")
CODE_THEME = "monokai"  # rich's Markdown default
# Lines of code lexed before a piece of a code block, for the right colours: generous for
# the pieces printed for good, short for the live region redrawn on every chunk.
CODE_CONTEXT = 40
LIVE_CODE_CONTEXT = 6
CODE_CHUNK = 4  # a long code block is printed for good this many lines at a time


class AnswerStream:
    """Streams markdown smoothly however long the answer gets.

    The answer is cut into blocks: at blank lines outside code fences (not inside
    a loose list), and around fenced code. A finished block is rendered once and
    printed for good; only the block being written is redrawn, in a live region
    at the bottom that never grows taller than the terminal (what would overflow
    is printed for good instead, so nothing is drawn twice). A long fenced code
    block is printed a few lines at a time, each piece lexed with the code before
    it. So the work per chunk is bounded by one block, not the whole answer, and
    what ends up on screen is what rich renders for the whole answer at once.

    Redraws are throttled to one per `min_interval` seconds (0: every chunk).
    While it streams, typed keys are not echoed (they would corrupt the live
    region; they stay queued for the next prompt), and a Ctrl-C that arrives in
    the middle of a redraw is raised right after it, so the terminal is never
    left half-drawn.
    """

    def __init__(self, target, *, min_interval: float = 0.05, code_theme: str = CODE_THEME):
        from rich.console import Console

        # target: a Printer, or a rich Console (tests, benchmarks).
        if isinstance(target, Console):
            self.printer, self.console = None, target
        else:
            self.printer, self.console = target, target.console
        self.min_interval = min_interval
        self.code_theme = code_theme
        self.text = ""  # everything written
        self.pending = ""  # the source of the block being written
        self._pos = 0  # pending[:_pos] is complete lines, already scanned
        self._blank = False  # the last scanned line was blank
        self._is_list = False  # the pending block holds a list
        self._fence: tuple[str, int] | None = None  # the open fence: (character, length)
        self._code: dict | None = None  # the pending block is fenced code at column 0
        self._sep = False  # a blank line goes before the next block, as rich puts one
        self._committed = 0  # rendered lines of the pending block already printed for good
        self._out: list = []  # lines to print for good at the next draw
        self._height = 0  # lines of the live region on screen
        self._last_draw = 0.0
        self._dirty = False
        self._broken = False  # rendering failed: the rest goes out as plain text
        self._active = False
        self._busy = False  # drawing: a Ctrl-C waits until the terminal is consistent
        self._interrupted = False
        self._undecided = False  # whether the line being written starts a new block is not known yet
        self._old_sigint = None
        self._old_tty = None

    # --- the stream ----------------------------------------------------------------------

    def __enter__(self):
        self._active = True
        if self.printer is not None:
            self.printer._stream = self
            self._quiet_tty(getattr(self.printer.env, "stdin", None))
        self._catch_sigint()
        self.console.show_cursor(False)
        return self

    def write(self, piece: str) -> None:
        if not piece:
            return
        self.text += piece
        if self._broken:
            self._write_raw(piece)
            return
        self._busy = True
        try:
            self.pending += piece
            self._dirty = True
            self._scan()
            self._draw()
        except Exception:
            self._fall_back()
        finally:
            self._busy = False
        if self._interrupted:
            self._interrupted = False
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        self._busy = True  # a Ctrl-C now has nothing left to stop
        try:
            if not self._broken:
                try:
                    self._finish(len(self.pending))
                    self._draw(force=True)
                except Exception:
                    self._fall_back()
            elif self.text and not self.text.endswith("\n"):
                self._write_raw("\n")
            self.console.show_cursor(True)
        finally:
            self._active = False
            if self.printer is not None and self.printer._stream is self:
                self.printer._stream = None
            self._restore_sigint()
            self._restore_tty()
            self._busy = self._interrupted = False
        return False

    @contextlib.contextmanager
    def paused(self):
        """Clear the live region so something else can be printed, then redraw it."""
        if not self._active or self._broken:
            yield
            return
        busy, self._busy = self._busy, True
        try:
            self._show([], [])
            yield
        finally:
            self._dirty = True
            try:
                self._draw(force=True)
            except Exception:
                self._fall_back()
            self._busy = busy

    # --- cutting the answer into blocks -------------------------------------------------------

    def _scan(self) -> None:
        """Look at the complete lines not seen yet; queue the blocks they finish."""
        while True:
            nl = self.pending.find("\n", self._pos)
            if nl < 0:
                self._scan_partial()
                return
            start, line = self._pos, self.pending[self._pos:nl]
            self._pos = nl + 1
            if self._fence is not None:
                if _closes(line, self._fence):
                    self._fence = None
                    if self._code is not None:
                        self._finish(self._pos)  # fenced code is a block of its own
                continue
            if not line.strip():
                self._blank = True
                continue
            fence = _opens(line)
            top_fence = fence is not None and not line.startswith(" ")
            if start > 0 and (top_fence or (self._blank and not self._continues(line))):
                self._finish(start)  # this line starts a new block
                start = 0
            self._blank = False
            if fence is not None:
                self._fence = fence
                if top_fence:
                    info = line[fence[1]:].strip()
                    self._code = {"lexer": info.split()[0] if info else "text",
                                  "head": len(line) + 1, "done": 0}
            elif LIST_ITEM.match(line):
                self._is_list = True

    def _scan_partial(self) -> None:
        """Decide as early as its first characters allow whether the line being written
        starts a new block, so that the block before is printed for good in one piece."""
        self._undecided = False
        if self._fence is not None or self._pos == 0:
            return
        head = self.pending[self._pos:self._pos + 40]
        if not head.strip():
            return
        if not self._blank:
            if head[0] in "`~":
                self._undecided = True  # a fence would end the block: wait for the line
            return
        if (head[0] not in " \t" and self._is_list and not LIST_ITEM.match(head)
                and re.match(r"(?:[-+*]|\d{1,9}[.)]?)$", head)):
            self._undecided = True  # "-" or "1." may still become the next list item
            return
        if not self._continues(head):
            self._finish(self._pos)

    def _continues(self, line: str) -> bool:
        """After a blank line: does this line still belong to the pending block?"""
        if line[0] in " \t":
            return True  # the next paragraph of a list item, or indented code
        return self._is_list and bool(LIST_ITEM.match(line))  # the next item of a loose list

    def _finish(self, cut: int) -> None:
        """pending[:cut] is a finished block: queue what of it is not printed yet."""
        block, self.pending = self.pending[:cut], self.pending[cut:]
        self._pos = max(0, self._pos - cut)
        if block.strip():
            if self._code is not None and self._code["done"]:
                lines = _code_body(block[self._code["head"]:])
                self._out += self._code_lines(lines, self._code["done"], len(lines), last=True)
                self._sep = True
            else:
                markdown = self._markdown(block)
                self._out += self._render(markdown)[self._committed:]
                self._sep = _blank_after(markdown)
        self._committed = 0
        self._code = None
        if not self.pending:
            self._fence = None  # the answer ended inside a fence
        self._blank = self._is_list = False
        self._dirty = True

    # --- drawing -----------------------------------------------------------------------------

    def _draw(self, force: bool = False) -> None:
        if not (self._dirty or self._out):
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self.min_interval:
            return
        live = self._live_lines()
        self._show(self._out, live)
        self._out = []
        self._dirty = False
        self._last_draw = now

    def _live_lines(self) -> list:
        """The pending block's lines that are not printed for good (moving overflow there)."""
        limit = self._max_live()
        if self._code is not None:
            return self._live_code(limit)
        if not self.pending.strip():
            return []
        markdown = self._markdown(self.pending)
        lines = self._render(markdown)[self._committed:]
        if len(lines) > limit and (self._undecided or not _grows_at_the_end(markdown)):
            # Taller than the terminal, but its top may still change (this block may end
            # before its last line; a table's columns or a numbered list's margin may
            # widen): show the bottom, print it all when it is done.
            return lines[-limit:]
        if len(lines) > limit:
            over = len(lines) - limit
            self._out += lines[:over]
            self._committed += over
            lines = lines[over:]
        return lines

    def _live_code(self, limit: int) -> list:
        code = self._code
        lines = self.pending[code["head"]:].split("\n")
        partial = lines.pop()  # the line being written
        # Print for good the complete lines before the last non-blank one (trailing blank
        # lines are dropped when the block closes, and the last piece needs a line).
        keep = max((i for i, text in enumerate(lines) if text.strip()), default=-1)
        chunk = max(1, min(CODE_CHUNK, limit - 3))
        if keep - code["done"] >= chunk:
            self._out += self._code_lines(lines, code["done"], keep, last=False)
            code["done"] = keep
        shown = lines + [partial] if partial else lines
        return self._code_lines(shown, code["done"], len(shown), last=True,
                                context=LIVE_CODE_CONTEXT)[-limit:]

    def _max_live(self) -> int:
        return max(1, self.console.size.height - 1)

    def _markdown(self, text: str):
        from rich.markdown import Markdown

        return Markdown(text, code_theme=self.code_theme)

    def _render(self, renderable, top: bool = True) -> list:
        """The renderable's lines, after the blank line that separates it from the last block.

        rich puts that line before a leaf block (paragraph, heading, code) unless the
        block before is a rule; a list, quote or table brings its own, even first."""
        from rich.markdown import Markdown

        options = self.console.options.update(height=None)
        lines = self.console.render_lines(renderable, options, pad=False)
        if isinstance(renderable, Markdown):
            top = top and bool(renderable.parsed) and renderable.parsed[0].type in LEAF_BLOCKS
        return ([[]] if self._sep and top else []) + lines

    def _code_lines(self, lines: list[str], a: int, b: int, last: bool,
                    context: int = CODE_CONTEXT) -> list:
        """Rendered code lines a..b-1 of the pending code block, as rich's Markdown draws
        them (padding above the first, below the last), lexed with the lines before."""
        from rich.syntax import Syntax

        first = max(0, a - context) if b > a else b
        syntax = Syntax("\n".join(lines[first:b]), self._code["lexer"], theme=self.code_theme,
                        word_wrap=True, padding=(1 if a == 0 else 0, 1, 1 if last else 0, 1),
                        line_range=(a - first + 1, b - first) if b > a else None)
        return self._render(syntax, top=a == 0)

    def _show(self, lines: list, live: list) -> None:
        """One write: erase the live region, print `lines` for good, draw `live` below."""
        from rich.control import Control, ControlType
        from rich.segment import Segment, Segments

        if not (lines or live or self._height):
            return
        segments: list = []
        if self._height:
            erase = ((ControlType.CURSOR_UP, 1), (ControlType.ERASE_IN_LINE, 2)) * (self._height - 1)
            segments.append(Control(ControlType.CARRIAGE_RETURN, (ControlType.ERASE_IN_LINE, 2),
                                    *erase).segment)
        for line in lines:
            segments += line
            segments.append(Segment.line())
        for i, line in enumerate(live):
            if i:
                segments.append(Segment.line())
            segments += line
        self.console.print(Segments(segments), end="", crop=False, soft_wrap=True)
        self._height = len(live)

    def _write_raw(self, text: str) -> None:
        self.console.file.write(text)
        self.console.file.flush()

    def _fall_back(self) -> None:
        """Rendering failed (a bug): say the rest as plain text rather than lose it."""
        if self._broken:
            return
        self._broken = True
        try:
            self._show(self._out, [])  # the blocks already rendered, if that still works
        except Exception:
            pass
        self._write_raw("\n" + self.pending)

    # --- the terminal while streaming ---------------------------------------------------------

    def _catch_sigint(self) -> None:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        try:
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._old_sigint = signal.signal(signal.SIGINT, self._on_sigint)
        except (ValueError, OSError):
            pass

    def _on_sigint(self, signum, frame) -> None:
        if self._busy:
            self._interrupted = True  # raised when the redraw is done
        else:
            raise KeyboardInterrupt

    def _restore_sigint(self) -> None:
        if self._old_sigint is not None:
            import signal

            signal.signal(signal.SIGINT, self._old_sigint)
            self._old_sigint = None

    def _quiet_tty(self, stdin) -> None:
        """No echo of typed keys while the answer streams (they stay queued)."""
        try:
            import termios

            if stdin is None or not stdin.isatty():
                return
            fd = stdin.fileno()
            if os.tcgetpgrp(fd) != os.getpgrp():
                return  # in the background: touching the terminal would stop us (SIGTTOU)
            old = termios.tcgetattr(fd)
            new = list(old)
            new[3] &= ~termios.ECHO
            termios.tcsetattr(fd, termios.TCSANOW, new)
            self._old_tty = (fd, old)
        except (ImportError, OSError, ValueError, AttributeError):
            pass

    def _restore_tty(self) -> None:
        if self._old_tty is not None:
            import termios

            fd, old = self._old_tty
            self._old_tty = None
            try:
                termios.tcsetattr(fd, termios.TCSANOW, old)
            except (OSError, ValueError):
                pass


def _opens(line: str) -> tuple[str, int] | None:
    """(character, length) when the line opens a code fence."""
    m = FENCE.match(line)
    if m is None:
        return None
    marker, info = m.group(2), m.group(3)
    if marker[0] == "`" and "`" in info:
        return None  # ```inline code``` is not a fence
    return marker[0], len(marker)


def _closes(line: str, fence: tuple[str, int]) -> bool:
    stripped = line.strip()
    return (len(line) - len(line.lstrip(" ")) <= 3 and len(stripped) >= fence[1]
            and stripped == fence[0] * len(stripped))


def _code_body(body: str) -> list[str]:
    """The code lines of a finished fenced block (after its opening line), as rich's
    Markdown shows them: without the closing fence and trailing blank lines."""
    lines = body.split("\n")
    if lines and not lines[-1]:
        lines.pop()
    if lines and FENCE.match(lines[-1]) and not lines[-1].strip().strip(lines[-1].strip()[0]):
        lines.pop()
    return "\n".join(lines).rstrip().split("\n")


def _blank_after(markdown) -> bool:
    """Does rich put a blank line after this block's last element? (Not after a rule.)"""
    top = [t for t in markdown.parsed if t.level == 0]
    return not (top and top[-1].type == "hr")


def _grows_at_the_end(markdown) -> bool:
    """True when more text can't change how the block's earlier lines render (paragraphs,
    bullet lists, quotes); false for tables and numbered lists, whose widths can change."""
    return not any(t.type in ("table_open", "ordered_list_open") for t in markdown.parsed)
