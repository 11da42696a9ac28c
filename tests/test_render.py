"""Streaming answers: AnswerStream (rich, on a terminal) and PlainStream (piped).

AnswerStream writes to a rich Console on a StringIO (force_terminal). What a
terminal would show is worked out by a small VT100 model (`Screen`: the cursor
moves, line erases and colours rich writes, a fixed height, scrollback above
it), so the tests can say: once the stream is done, screen and scrollback hold
exactly what rich prints for the whole answer at once, same characters, same
colours; nothing drawn twice, nothing dropped.
"""

from __future__ import annotations

import io
import os
import re
import signal

import pytest
from rich.cells import get_character_cell_size
from rich.console import Console
from rich.markdown import Markdown

from mecli.environment import Environment
from mecli.render import AnswerStream, PlainStream, Printer

# --- a terminal, as far as rich uses one ---------------------------------------------------

CSI = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z])")
OSC = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


class Screen:
    """Scrollback plus a `height`-line screen; the cursor can't move above the screen."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.lines: list[list[tuple[str, str]]] = [[]]  # cells: (character, SGR codes)
        self.row = self.col = self.top = 0
        self.sgr = ""

    def feed(self, data: str) -> "Screen":
        i = 0
        while i < len(data):
            ch = data[i]
            if ch == "\x1b":
                m = CSI.match(data, i) or OSC.match(data, i)
                if m is None:
                    raise AssertionError(f"unexpected escape {data[i:i + 12]!r}")
                if m.re is CSI:
                    self._csi(m.group(1), m.group(2))
                i = m.end()
                continue
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self._down()
            elif ch >= " ":
                self._put(ch)
            i += 1
        return self

    def _down(self) -> None:
        self.row += 1
        self.col = 0
        while len(self.lines) <= self.row:
            self.lines.append([])
        self.top = max(self.top, self.row - self.height + 1)

    def _put(self, ch: str) -> None:
        w = get_character_cell_size(ch)
        if w == 0:
            return
        if self.col + w > self.width:  # auto-wrap
            self._down()
        line = self.lines[self.row]
        while len(line) < self.col + w:
            line.append((" ", ""))
        line[self.col] = (ch, self.sgr)
        for k in range(1, w):
            line[self.col + k] = ("", self.sgr)
        self.col += w

    def _csi(self, params: str, final: str) -> None:
        if params.startswith("?"):
            return  # cursor shown / hidden
        n = int(params.split(";")[0] or 1) if params else 1
        if final == "m":
            self.sgr = "" if params in ("", "0") else self.sgr + params + ";"
        elif final == "A":
            self.row = max(self.top, self.row - n)
        elif final == "K":
            mode = int(params or 0)
            if mode == 2:
                self.lines[self.row] = []
            elif mode == 0:
                del self.lines[self.row][self.col:]
            else:
                raise AssertionError(f"unexpected erase mode {params}")
        elif final == "G":
            self.col = n - 1
        else:
            raise AssertionError(f"unexpected control sequence {params}{final}")

    def cells(self) -> list[list[tuple[str, str]]]:
        out = []
        for line in self.lines:
            line = list(line)
            while line and line[-1] == (" ", ""):
                line.pop()
            out.append(line)
        while out and not out[-1]:
            out.pop()
        return out

    def text(self) -> str:
        return "\n".join("".join(c for c, _ in line).rstrip() for line in self.cells())


def terminal(width: int = 60, height: int = 12) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=width, height=height, force_terminal=True,
                   color_system="truecolor"), buf


def full_render(text: str, width: int = 60) -> Screen:
    console, buf = terminal(width, 10_000)
    console.print(Markdown(text))
    return Screen(width, 10_000).feed(buf.getvalue())


def stream(text: str, chunks, width: int = 60, height: int = 12, **kw) -> tuple[Screen, str, AnswerStream]:
    console, buf = terminal(width, height)
    with AnswerStream(console, min_interval=kw.pop("min_interval", 0), **kw) as s:
        for piece in chunks:
            s.write(piece)
    return Screen(width, height).feed(buf.getvalue()), buf.getvalue(), s


def pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


# --- answers ------------------------------------------------------------------------------

LONG_CODE = "```python\n" + "\n".join(
    f"def f{i}(x):\n    '''Doc {i}.'''\n    return x * {i}  # note {i}" for i in range(15)) + "\n```"
ANSWERS = {
    "paragraphs": "First paragraph, **bold** and `code`.\n\nSecond one, with a [link](http://x.y).\n\nThird.",
    "markdown": (
        "# Lists\n\nIntro text that is long enough to wrap around the sixty column terminal "
        "at least once.\n\n- apple\n- banana\n- cherry\n\n1. one\n2. two\n\n"
        "```python\nprint('hi')\n\n\nprint('there')\n```\nRight after the fence.\n\n"
        "> a quote\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n---\n\nThe end."
    ),
    "loose list": "* one\n\n* two\n\n  more about two\n\n* three\n\nAfter.",
    "long code": f"Here it is:\n\n{LONG_CODE}\n\nDone.",
    "long paragraph": "word " * 300 + "\n\nafter",
    "long list": "\n".join(f"- item {i}" for i in range(30)) + "\n\n"
                 + "\n".join(f"{i}. step {i}" for i in range(1, 25)),
    "long table": "| name | n |\n|---|---|\n" + "\n".join(f"| {'x' * i} | {i} |" for i in range(25)),
    "unclosed fence": "Code:\n\n```js\nlet a = 1;\n\nlet b = 2;",
    "wide characters": "Fruit 🍎🍌 and 漢字 " * 12 + "\n\n- 🍒 cherry",
    "starts with blank lines": "\n\n```\nplain code\n```",
}


@pytest.mark.parametrize("size", [2, 5, 17])
@pytest.mark.parametrize("name", list(ANSWERS))
def test_the_screen_ends_up_as_a_full_render(name, size):
    text = ANSWERS[name]
    screen, _, s = stream(text, pieces(text, size))
    expected = full_render(text)
    assert screen.text() == expected.text()
    assert screen.cells() == expected.cells()  # colours too: code lexed with its context
    assert s.text == text


def test_a_short_terminal_and_a_throttled_redraw_change_nothing():
    text = ANSWERS["markdown"] + "\n\n" + ANSWERS["long code"]
    expected = full_render(text, width=40)
    for height, interval in ((5, 0), (24, 0), (8, 10.0)):
        screen, _, _ = stream(text, pieces(text, 2), width=40, height=height, min_interval=interval)
        assert screen.cells() == expected.cells(), (height, interval)


def test_finished_blocks_are_printed_once():
    first = "Alpha block, printed for good once it is done."
    text = first + "\n\n" + "More words in the second block. " * 40
    console, buf = terminal(60, 12)
    with AnswerStream(console, min_interval=0) as s:
        for piece in pieces(first + "\n\nM", 4):
            s.write(piece)
        printed = buf.getvalue().count(first)
        assert printed >= 1
        for piece in pieces(text[len(first) + 3:], 4):
            s.write(piece)
        assert buf.getvalue().count(first) == printed  # never redrawn after that
    assert buf.getvalue().count(first) == printed


def test_only_the_block_being_written_is_redrawn():
    text = "\n\n".join(f"Paragraph number {i} with a few words." for i in range(60))
    console, buf = terminal(60, 12)
    sizes = []
    with AnswerStream(console, min_interval=0) as s:
        for piece in pieces(text, 5):
            before = len(buf.getvalue())
            s.write(piece)
            sizes.append(len(buf.getvalue()) - before)
    assert max(sizes[-50:]) < 400  # one short block, not the whole answer


def test_a_code_fence_is_never_split_at_its_blank_lines():
    code = "```python\na = 1\n\n\nb = 2\n\nprint(a + b)\n```"
    text = "Before.\n\n" + code + "\n\nAfter."
    start, end = text.index("```python\n"), text.rindex("```") + 3
    console, _ = terminal()
    with AnswerStream(console, min_interval=0) as s:
        for written in range(1, len(text) + 1):
            s.write(text[written - 1])
            if start + len("```python\n") <= written < end:
                assert s.pending == text[start:written]  # the fence is one block while open
    screen, _, _ = stream(text, pieces(text, 1))
    shown = screen.text().splitlines()
    assert shown.count(" a = 1") == 1 and shown.count(" print(a + b)") == 1
    assert screen.cells() == full_render(text).cells()


def test_the_live_region_is_never_taller_than_the_terminal():
    text = ANSWERS["long paragraph"] + "\n\n" + ANSWERS["long code"]
    _, raw, _ = stream(text, pieces(text, 3), height=10)
    # Each redraw erases the region going up line by line: never more than the screen.
    heights = [len(m) // len("\x1b[1A\x1b[2K") + 1
               for m in re.findall(r"(?:\x1b\[1A\x1b\[2K)+", raw)]
    assert heights and max(heights) <= 10 - 1


def test_text_is_all_there_even_when_nothing_is_redrawn_in_time():
    text = ANSWERS["markdown"]
    screen, _, s = stream(text, pieces(text, 5), min_interval=3600)
    assert s.text == text
    assert screen.cells() == full_render(text).cells()


def test_empty_answer_prints_nothing():
    _, raw, s = stream("", [])
    assert s.text == ""
    assert Screen(60, 12).feed(raw).text() == ""


def test_a_ctrl_c_in_the_middle_of_a_redraw_waits_until_it_is_done():
    text = "Some answer text that goes on. " * 10
    console, buf = terminal()
    s = AnswerStream(console, min_interval=0)
    show = s._show
    state = {"sent": False}

    def show_with_a_signal(lines, live):
        if not state["sent"] and live:
            state["sent"] = True
            os.kill(os.getpid(), signal.SIGINT)  # arrives while the region is being drawn
        show(lines, live)

    s._show = show_with_a_signal
    with pytest.raises(KeyboardInterrupt):
        with s:
            for piece in pieces(text, 4):
                s.write(piece)
    assert state["sent"]
    assert s.text == text[:4]  # raised right after the first piece was drawn
    assert Screen(60, 12).feed(buf.getvalue()).text() == full_render(text[:4]).text()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_a_notice_while_streaming_goes_above_the_live_region():
    out = FakeTTY()
    printer = Printer(Environment(stdout=out, stderr=out, environ={}))
    text = "First block.\n\nSecond block, still being written"
    with printer.stream() as s:
        assert isinstance(s, AnswerStream)
        s.min_interval = 0
        for piece in pieces(text, 3):
            s.write(piece)
        printer.notice("a notice")
        s.write(" and done.")
    shown = Screen(printer.console.width, 10_000).feed(out.getvalue()).text().splitlines()
    assert shown.count("a notice") == 1
    assert shown[-1] == "Second block, still being written and done."
    assert shown[0] == "First block."


# --- plain ---------------------------------------------------------------------------------


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_plain_stream_writes_exactly_the_text():
    out = io.StringIO()
    text = "# Title\n\n- a\n- b\n\n```py\nx = 1\n```\n"
    with PlainStream(Environment(stdout=out)) as s:
        for piece in pieces(text, 3):
            s.write(piece)
    assert out.getvalue() == text
    assert s.text == text


def test_plain_stream_ends_the_last_line():
    out = io.StringIO()
    with PlainStream(Environment(stdout=out)) as s:
        s.write("no newline at the end")
    assert out.getvalue() == "no newline at the end\n"


@pytest.mark.parametrize("stdout, environ, plain", [
    (io.StringIO(), {}, True),  # piped
    (FakeTTY(), {"NO_COLOR": "1"}, True),
    (FakeTTY(), {}, False),
])
def test_plain_when_piped_or_no_color(stdout, environ, plain):
    printer = Printer(Environment(stdout=stdout, stderr=io.StringIO(), environ=environ))
    with printer.stream() as s:
        s.write("**bold** text")
    assert isinstance(s, PlainStream) is plain
    if plain:
        assert stdout.getvalue() == "**bold** text\n"
        assert "\x1b" not in stdout.getvalue()
    else:
        assert "\x1b[" in stdout.getvalue() and "**" not in stdout.getvalue()


def test_a_rendering_failure_falls_back_to_plain_text():
    console, buf = terminal()
    s = AnswerStream(console, min_interval=0)

    def broken(*args, **kwargs):
        raise RuntimeError("a rendering bug")

    with s:
        s.write("Done block.\n\nSecond ")
        s._render = broken
        s.write("block goes on")
        s.write(" and ends.")
    shown = Screen(60, 12).feed(buf.getvalue()).text()
    assert "Done block." in shown
    assert "Second block goes on and ends." in shown
    assert s.text == "Done block.\n\nSecond block goes on and ends."
