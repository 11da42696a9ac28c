"""The REPL, driven the way a person drives it: the real `me` (python -m mecli) in a
pseudo-terminal (pexpect), the real bundled model, a temp ME_HOME.

Every prompt session of prompt-toolkit starts by switching bracketed paste on
(ESC [?2004h) and ends by switching it off (ESC [?2004l), so "the next prompt is
here" is that switch followed by the prompt text, never an echo of the line being
typed. Answers are kept short with `max_tokens` in config.toml.
"""

from __future__ import annotations

import os
import re
import stat
import sys

import pytest

pexpect = pytest.importorskip("pexpect")

pytestmark = pytest.mark.e2e

PROMPT = re.compile(r"\x1b\[\?2004h[^\n]*?me( \(incognito\))?>")
PROMPT_DONE = "\x1b[?2004l"  # the line was sent: what follows is the answer
ESCAPES = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][A-Z0-9]|[=>78])")
TIMEOUT = 120  # the machine may be busy: the first answer loads the model
UP = "\x1b[A"
ALT_ENTER = "\x1b\r"
CTRL_C = "\x03"
CTRL_D = "\x04"


def clean(raw: str) -> str:
    """What the terminal showed, as text: escape codes out, whitespace collapsed."""
    return " ".join(ESCAPES.sub("", raw).replace("\x08", "").split())


class Chat:
    """One running REPL."""

    def __init__(self, child):
        self.child = child

    def prompt(self) -> str:
        """Wait for the next prompt; returns what was shown before it (cleaned)."""
        self.child.expect(PROMPT)
        return clean(self.child.before)

    def say(self, line: str) -> str:
        """Type a line and Enter; returns the output up to the next prompt (cleaned)."""
        self.child.send(line + "\r")
        return self.prompt()

    def raw_say(self, line: str) -> str:
        self.child.send(line + "\r")
        self.child.expect(PROMPT)
        return self.child.before

    def quit(self) -> int:
        """Ctrl-D at the prompt; returns the exit status."""
        self.child.send(CTRL_D)
        self.child.expect(pexpect.EOF)
        self.child.close()
        return self.child.exitstatus


@pytest.fixture
def chat(me_env, me_home):
    """chat(*args, max_tokens=N): start `python -m mecli *args` on a pseudo-terminal and
    wait for its first prompt."""
    children = []

    def start(*args: str, max_tokens: int = 16) -> Chat:
        (me_home / "config.toml").write_text(f"max_tokens = {max_tokens}\n", encoding="utf-8")
        env = {k: v for k, v in me_env.items() if k not in ("NO_COLOR", "COLUMNS", "LINES")}
        env.update({"TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"})
        child = pexpect.spawn(sys.executable, ["-m", "mecli", *args], env=env,
                              dimensions=(40, 120), encoding="utf-8", codec_errors="replace",
                              timeout=TIMEOUT)
        children.append(child)
        c = Chat(child)
        banner = c.prompt()
        assert "/help for commands" in banner
        return c

    yield start
    for child in children:
        if child.isalive():
            child.terminate(force=True)


def conversations(store) -> list[list]:
    """Every stored conversation's messages, oldest conversation first."""
    return [store.conversation_messages(c["id"]) for c in reversed(store.conversations(100))]


def first_word(text: str) -> str:
    words = re.findall(r"[A-Za-z]{3,}", text)
    assert words, f"no word in the answer {text!r}"
    return words[0]


# --- asking ------------------------------------------------------------------------------


def test_question_gets_a_streamed_answer_and_turns_are_stored(chat, store):
    c = chat("chat", max_tokens=32)
    raw = c.raw_say("Explain what a compiler does, in two sentences.")
    convs = conversations(store)
    assert len(convs) == 1
    user, answer = convs[0]
    assert (user.role, user.content) == ("user", "Explain what a compiler does, in two sentences.")
    assert answer.role == "assistant" and answer.content.strip() and not answer.interrupted
    shown = clean(raw.split(PROMPT_DONE, 1)[1])
    assert first_word(answer.content) in shown
    # Streamed: the live region was drawn as tokens came and erased (erase-line codes)
    # to be redrawn, not printed once at the end.
    assert raw.count("\x1b[2K") >= 2

    c.say("And what does an interpreter do?")
    convs = conversations(store)
    assert len(convs) == 1, "the second question continues the same conversation"
    assert [m.role for m in convs[0]] == ["user", "assistant", "user", "assistant"]
    assert convs[0][2].content == "And what does an interpreter do?"
    assert c.quit() == 0


def test_bare_me_on_a_terminal_opens_the_repl(chat):
    c = chat()
    out = c.say("/help")
    assert "/new" in out and "/exit" in out
    assert c.quit() == 0


def test_ctrl_d_at_the_prompt_exits_with_status_0(chat, store):
    c = chat("chat")
    assert c.quit() == 0
    assert store.conversations(10) == []


# --- slash commands -------------------------------------------------------------------------


def test_slash_commands(chat, store):
    from mecli.repl import COMMANDS

    c = chat("chat")
    out = c.say("/help")
    for name in COMMANDS:
        assert name in out, f"/help does not list {name}"
    assert "no answer yet" in c.say("/context")

    c.say("Name a colour.")
    out = c.say("/context")
    assert "You are me" in out and "messages sent" in out
    out = c.say("/history")
    assert "Name a colour." in out

    assert "new conversation" in c.say("/new")
    c.say("Name a fruit.")
    convs = conversations(store)
    assert [[m.content for m in conv if m.role == "user"] for conv in convs] == [
        ["Name a colour."], ["Name a fruit."]]

    out = c.say("/bogus")
    assert "unknown command /bogus" in out  # one error line, and the prompt is back
    assert "/incognito" in c.say("/he")  # an unambiguous start of a command is enough
    c.child.send("/exit\r")
    c.child.expect(pexpect.EOF)
    c.child.close()
    assert c.child.exitstatus == 0


def test_incognito_stores_nothing_while_on(chat, store, me_home):
    c = chat("chat")
    assert "incognito on" in c.say("/incognito")
    c.child.send("My secret code is 4242.\r")
    c.child.expect(r"\x1b\[\?2004h[^\n]*?me \(incognito\)>")  # the prompt says so
    assert store.conversations(10) == []
    assert "incognito off" in c.say("/incognito")
    c.say("Say hi.")
    convs = conversations(store)
    assert len(convs) == 1 and [m.content for m in convs[0]][0] == "Say hi."
    assert c.quit() == 0
    assert all("4242" not in m.content for conv in conversations(store) for m in conv)
    assert "4242" not in (me_home / "input_history").read_text(encoding="utf-8")


# --- input ----------------------------------------------------------------------------------


def test_multiline_input_with_triple_quotes_and_alt_enter(chat, store):
    c = chat("chat")
    c.child.send('"""\r')
    c.child.send("line one\r")
    c.child.send('line two"""\r')
    c.prompt()
    c.child.send(f"first{ALT_ENTER}second\r")
    c.prompt()
    users = [m.content for m in conversations(store)[0] if m.role == "user"]
    assert users == ["line one\nline two", "first\nsecond"]
    assert c.quit() == 0


def test_input_history_is_kept_and_recalled_by_a_new_repl(chat, store, me_home):
    c = chat("chat")
    c.say("Tell me a fact about owls.")
    assert c.quit() == 0
    path = me_home / "input_history"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "Tell me a fact about owls." in path.read_text(encoding="utf-8")

    c = chat("chat")
    c.child.send(UP)
    c.child.expect_exact("Tell me a fact about owls.")  # recalled into the line
    c.raw_say("")  # Enter sends it again
    users = [m.content for conv in conversations(store) for m in conv if m.role == "user"]
    assert users == ["Tell me a fact about owls.", "Tell me a fact about owls."]
    assert c.quit() == 0


def test_ctrl_c_at_the_prompt_clears_the_line(chat, store):
    c = chat("chat")
    c.child.send("half a thought")
    c.child.send(CTRL_C)
    c.prompt()
    assert c.quit() == 0
    assert store.conversations(10) == []


# --- Ctrl-C mid-answer -------------------------------------------------------------------------


def test_ctrl_c_stops_the_answer_keeps_it_and_stays(chat, store):
    c = chat("chat", max_tokens=2000)
    c.child.send("Write a very long story about a dragon who learns to fly, in many chapters.\r")
    c.child.expect_exact(PROMPT_DONE)
    c.child.expect(r"[A-Za-z]{3,}")  # the answer is on screen: stop it
    c.child.send(CTRL_C)
    assert "interrupted" in c.prompt()

    c.say("Say hello.")  # still in the REPL, and it still answers
    [conv] = conversations(store)
    assert [m.role for m in conv] == ["user", "assistant", "user", "assistant"]
    story = conv[1]
    assert story.interrupted == 1
    assert story.content.strip(), "the partial answer is kept"
    assert story.completion_tokens < 2000
    assert conv[3].interrupted == 0 and conv[3].content.strip()
    assert c.quit() == 0


# --- the parts that need no terminal ----------------------------------------------------------


@pytest.mark.parametrize("typed, sent", [
    ('"""\nline one\nline two"""', "line one\nline two"),
    ('"""one line"""', "one line"),
    ('  """\n  indented\n"""  ', "  indented"),
    ("plain text", "plain text"),
])
def test_triple_quote_block_is_one_message(typed, sent):
    from mecli.repl import _open_block, _unwrap_block

    assert not _open_block(typed)
    assert _unwrap_block(typed) == sent


@pytest.mark.parametrize("typed", ['"""', '"""\nstill typing', '   """ more'])
def test_enter_adds_a_line_inside_an_open_block(typed):
    from mecli.repl import _open_block

    assert _open_block(typed)


@pytest.mark.parametrize("typed, command", [
    ("/he", "/help"), ("/hi", "/history"), ("/inc", "/incognito"), ("/h", "/h"),
    ("/e", "/e"), ("/bogus", "/bogus"), ("/quit", "/quit"),
])
def test_a_command_can_be_shortened_when_unambiguous(typed, command):
    from mecli.repl import _resolve

    assert _resolve(typed) == command


def test_forget_in_the_repl_asks_then_deletes(chat, store, me_home):
    c = chat("chat")
    c.say("My locker code is zanzibar77.")
    convs = conversations(store)
    assert len(convs) == 1
    c.child.send("/forget zanzibar77\r")
    c.child.expect("for good")
    c.child.send("y\r")
    shown = c.prompt()
    assert "forgotten" in shown
    assert store.conversations(10) == []
    c.say("/forget --id notanumber")  # a bad selector: an error line, the REPL stays
    c.say("Say hi.")
    assert len(conversations(store)) == 1
    assert c.quit() == 0
    assert "zanzibar77" not in (me_home / "input_history").read_text(encoding="utf-8")
