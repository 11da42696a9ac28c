"""The interactive chat: prompt-toolkit input, streamed answers, slash commands.

Enter sends; Alt-Enter (or Esc then Enter) adds a line; a message that starts
with \"\"\" goes on, Enter adding lines, until a line that ends with \"\"\" (the
whole block is one message and one entry of the input history). Ctrl-C stops an
answer (the partial answer is kept) and stays; at the prompt it clears the line.
Ctrl-D leaves.
"""

from __future__ import annotations

import os
import shlex

from mecli import assistant, profile
from mecli.db import Message, now_iso
from mecli.environment import Environment, MeError

COMMANDS = {
    "/help": "this list",
    "/new": "start a new conversation",
    "/history": "the latest conversations",
    "/context": "what the last answer was given: profile rules, recalled memory",
    "/feedback": "/feedback TEXT: a correction about the last answer",
    "/good": "the last answer was good",
    "/bad": "/bad [why]: the last answer was bad",
    "/profile": "the active preference rules",
    "/forget": "/forget QUERY | --id ID | --conversation ID: delete for real (asks first)",
    "/incognito": "toggle: nothing read from or written to memory",
    "/exit": "leave (Ctrl-D works too)",
}


def _history_class():
    from prompt_toolkit.history import FileHistory

    class CappedHistory(FileHistory):
        """Input history on disk (mode 0600), capped, and paused while incognito."""

        def __init__(self, path, cap: int):
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            self.paused = False
            super().__init__(str(path))
            self._cap(path, cap)

        def store_string(self, string: str) -> None:
            if not self.paused:
                super().store_string(string)

        @staticmethod
        def _cap(path, cap: int) -> None:
            text = path.read_text(encoding="utf-8", errors="replace")
            entries = text.split("\n# ")
            if len(entries) > cap + 1:
                kept = "\n# ".join([""] + entries[-cap:])
                tmp = path.with_suffix(".tmp")
                tmp.write_text(kept, encoding="utf-8")
                os.chmod(tmp, 0o600)
                os.replace(tmp, path)

    return CappedHistory


class Repl:
    def __init__(self, app, env: Environment, printer, *, conversation_id: int | None = None,
                 use_memory: bool = True, incognito: bool = False, input=None, output=None):
        self.app = app
        self.env = env
        self.printer = printer
        self.conversation_id = conversation_id
        self.use_memory = use_memory
        self.incognito = incognito
        self.incognito_history: list[Message] = []
        self.last_prompt: assistant.Prompt | None = None
        self.last_answer_id: int | None = None
        self._input, self._output = input, output

    # --- input ----------------------------------------------------------------------

    def _session(self):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.application import get_app
        from prompt_toolkit.completion import WordCompleter
        from prompt_toolkit.filters import Condition
        from prompt_toolkit.key_binding import KeyBindings

        bindings = KeyBindings()

        @bindings.add("escape", "enter")
        def _newline(event):
            event.current_buffer.insert_text("\n")

        @bindings.add("enter", filter=Condition(lambda: _open_block(get_app().current_buffer.text)))
        def _block_line(event):
            event.current_buffer.insert_text("\n")  # inside a \"\"\" block Enter adds a line

        self.history = _history_class()(self.app.paths.input_history, self.app.config.history_size)
        self.history.paused = self.incognito
        completer = WordCompleter(list(COMMANDS), sentence=True)
        return PromptSession(history=self.history, key_bindings=bindings, completer=completer,
                             complete_while_typing=True, prompt_continuation=_continuation,
                             input=self._input, output=self._output)

    def _read(self, session) -> str:
        label = "me (incognito)> " if self.incognito else "me> "
        return _unwrap_block(session.prompt(label))

    # --- loop ------------------------------------------------------------------------------

    def run(self) -> None:
        session = self._session()
        self.printer.notice("me: chat with a local model. /help for commands, Ctrl-D to leave.")
        while True:
            try:
                text = self._read(session)
            except KeyboardInterrupt:
                continue  # Ctrl-C at the prompt clears the line
            except EOFError:
                return
            if not text.strip():
                continue
            try:
                if text.startswith("/"):
                    if self.command(text.strip()) == "exit":
                        return
                else:
                    self.ask(text)
            except KeyboardInterrupt:
                self.printer.notice("interrupted")  # Ctrl-C outside the answer: stay
            except EOFError:
                self.printer.notice("cancelled")  # Ctrl-D at a confirmation
            except MeError as e:
                self.printer.error(e.message)
            except Exception as e:  # a bug: say it in one line and keep the session
                self.printer.error(f"unexpected {type(e).__name__}: {e}")

    def ask(self, text: str) -> None:
        history = self.incognito_history if self.incognito else None
        with self.printer.stream() as stream:
            result = assistant.turn(self.app, text, conversation_id=self.conversation_id,
                                    use_memory=self.use_memory, incognito=self.incognito,
                                    on_text=stream.write, warn=self.printer.notice, history=history)
        for n in self.app.models.notices:
            self.printer.notice(n)
        self.app.models.notices.clear()
        self.last_prompt = result.prompt
        if result.generation.interrupted:
            self.printer.notice("[interrupted: partial answer kept]")
        if self.incognito:
            self.incognito_history += [_transient("user", text), _transient("assistant", result.content)]
        else:
            self.conversation_id = result.conversation_id
            self.last_answer_id = result.message_id
        for item in result.learned:
            rule = self.app.store.rule(item["rule_id"]) if item.get("rule_id") else None
            # Candidates stay quiet: a one-off request is not worth a notice.
            if rule and rule["status"] == "active":
                self.printer.notice(f"noted: {rule['text']}")

    # --- slash commands ----------------------------------------------------------------------

    def command(self, line: str) -> str | None:
        name, _, rest = line.strip().partition(" ")
        name = _resolve(name.lower())
        p = self.printer
        if name in ("/exit", "/quit", "/bye"):
            return "exit"
        if name == "/help":
            p.table(["command", "what it does"], [[k, v] for k, v in COMMANDS.items()])
        elif name == "/new":
            self.conversation_id = None
            self.incognito_history = []
            p.notice("new conversation")
        elif name == "/history":
            p.conversations(self.app.store.conversations(10))
        elif name == "/context":
            self._context()
        elif name in ("/feedback", "/good", "/bad"):
            self._feedback(name, rest)
        elif name == "/profile":
            rules = self.app.store.rules(("active",))
            p.table(["id", "rule", "support"], [[r["id"], r["text"], r["support"]] for r in rules])
        elif name == "/forget":
            self._forget(rest)
        elif name == "/incognito":
            self.incognito = not self.incognito
            self.history.paused = self.incognito
            self.conversation_id = None
            self.incognito_history = []
            p.notice("incognito on: nothing is read from or written to memory" if self.incognito
                     else "incognito off")
        else:
            p.error(f"unknown command {name}: /help lists them")
        return None

    def _context(self) -> None:
        if self.last_prompt is None:
            self.printer.notice("no answer yet")
            return
        self.printer.out(self.last_prompt.messages[0]["content"])
        self.printer.notice(f"{len(self.last_prompt.messages)} messages sent; "
                            f"{len(self.last_prompt.rules)} rules, "
                            f"{len(self.last_prompt.recalled)} recalled memories")

    def _feedback(self, name: str, rest: str) -> None:
        if self.incognito:
            self.printer.error("incognito: feedback is not recorded")
            return
        kind = {"/feedback": "correction", "/good": "good", "/bad": "bad"}[name]
        if kind == "bad" and rest.strip():
            kind = "correction"
        result = profile.give_feedback(self.app, rest, to=self.last_answer_id,
                                       general=self.last_answer_id is None, kind=kind)
        msg = f"feedback {result['id']} recorded"
        if result.get("rule"):
            msg += f": {result['rule']['text']} ({result['rule']['status']})"
        self.printer.notice(msg)

    def _forget(self, rest: str) -> None:
        """`/forget ARGS` is `me forget ARGS`: the same selectors, table and question."""
        from mecli.cli import run

        try:
            args = shlex.split(rest)
        except ValueError as e:
            self.printer.error(f"/forget: {e}")
            return
        run(["forget", *args], env=self.env)
        store = self.app.store
        if self.conversation_id is not None and not store.conversation_exists(self.conversation_id):
            self.conversation_id = None
            self.last_answer_id = None


def _resolve(name: str) -> str:
    """A command from its name or an unambiguous start of it (/he: /help)."""
    if name in COMMANDS or name in ("/quit", "/bye"):
        return name
    matches = [c for c in COMMANDS if c.startswith(name)] if len(name) >= 3 else []
    return matches[0] if len(matches) == 1 else name


def _open_block(text: str) -> bool:
    """Inside a \"\"\" block that is not closed yet?"""
    s = text.lstrip()
    return s.startswith('"""') and not s[3:].rstrip().endswith('"""')


def _unwrap_block(text: str) -> str:
    """The message inside a \"\"\" block (the text itself when it isn't one)."""
    s = text.strip()
    if not s.startswith('"""'):
        return text
    s = s[3:]
    if s.rstrip().endswith('"""'):
        s = s.rstrip()[:-3]
    return s.strip("\n")


def _continuation(width: int, line_number: int, wrap_count: int) -> str:
    """Before each further line of a message: '... '; before a wrapped part: blanks."""
    return " " * width if wrap_count else "." * (width - 1) + " "


def _transient(role: str, content: str) -> Message:
    return Message(id=0, conversation_id=0, external_id=None, role=role, content=content,
                   created_at=now_iso())
