"""The `me` command: parses arguments and prints. The work happens elsewhere.

`me PROMPT...` is `me ask PROMPT...`; `me` alone on a terminal is `me chat`.
"""

from __future__ import annotations

import sys
import traceback
from typing import List, Optional

import typer
from typer.core import TyperGroup

from mecli import __version__
from mecli.environment import Environment, ExitStatus, MeError, UsageError


class DefaultToAsk(TyperGroup):
    """Routes `me "question"` to `ask`, and bare `me` to the REPL (or to `ask`
    when text is piped in)."""

    def parse_args(self, ctx, args):
        env: Environment = ctx.obj.env
        if not args:
            args = ["ask"] if env.stdin_has_data else ["chat"]
        elif args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["ask", *args]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx):
        return list(self.commands)  # in the order they are defined


class State:
    """Per-invocation state handed to every command (injectable for tests)."""

    def __init__(self, env: Environment):
        from mecli.render import Printer

        self.env = env
        self.printer = Printer(env)
        self._app = None

    def app(self, model: str | None = None):
        from mecli.assistant import App
        from mecli.config import Paths, load_config
        from mecli.models import Models

        if self._app is None:
            paths = Paths.resolve(self.env.environ)
            config = load_config(paths, self.env.environ)
            if model:
                config.model = model
            self._app = App(config, paths, Models(config, paths))
        return self._app

    def close(self):
        if self._app is not None:
            self._app.close()


app = typer.Typer(
    cls=DefaultToAsk,
    help="me: a local, private assistant for your terminal that learns from your feedback.\n\n"
    "`me PROMPT` asks one question (piped text is added to the prompt); `me` alone opens the chat.",
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _state(ctx: typer.Context) -> State:
    return ctx.obj


def _version(value: bool):
    if value:
        typer.echo(f"me {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                        help="Show the version and exit.")):
    pass


def read_piped(env: Environment) -> str | None:
    """Text piped into `me`, or None. Binary or non-UTF-8 input is an error."""
    if not env.stdin_has_data:
        return None
    stream = getattr(env.stdin, "buffer", None)
    raw = stream.read() if stream is not None else env.stdin.read().encode("utf-8", "surrogateescape")
    if not raw:
        return None
    if b"\x00" in raw:
        raise UsageError("piped input looks binary (it contains NUL bytes): pipe text only")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"piped input is not UTF-8 text (invalid byte at offset {e.start})") from None


# --- ask -------------------------------------------------------------------------------


@app.command()
def ask(
    ctx: typer.Context,
    prompt: Optional[List[str]] = typer.Argument(None, help="The question; piped stdin is added to it."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document: the answer, ids, timings."),
    no_stream: bool = typer.Option(False, "--no-stream", help="Print the answer when it is complete."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, help="Longest answer, in tokens."),
    continue_: bool = typer.Option(False, "-c", "--continue", help="Continue the latest conversation."),
    conversation: Optional[int] = typer.Option(None, "--conversation", help="Continue this conversation id."),
    no_memory: bool = typer.Option(False, "--no-memory", help="Don't recall past conversations."),
    incognito: bool = typer.Option(False, "--incognito", help="Read nothing from memory, write nothing to it."),
    model: Optional[str] = typer.Option(None, "--model", help="Model: a GGUF path or hf:REPO/FILE."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the messages that would be sent, then exit."),
):
    """Ask one question and print the answer."""
    from mecli import assistant

    state = _state(ctx)
    printer = state.printer
    piped = read_piped(state.env)
    text = " ".join(prompt or [])
    if not text.strip() and not (piped and piped.strip()):
        raise UsageError("empty prompt: say something, or pipe text in")
    if incognito and (continue_ or conversation):
        raise UsageError("--incognito can't continue a stored conversation")
    a = state.app(model)
    conversation_id = _conversation_to_continue(a, continue_, conversation)

    if dry_run:
        p = assistant.build_prompt(a, assistant.user_content(text, piped), conversation_id,
                                   use_memory=not no_memory, incognito=incognito)
        for n in p.notices:
            printer.notice(n)
        printer.json({"messages": p.messages, "rules": [r["id"] for r in p.rules],
                      "recalled": [m.id for m in p.recalled]})
        return

    if json_ or no_stream:
        result = assistant.turn(a, text, piped=piped, conversation_id=conversation_id,
                                use_memory=not no_memory, incognito=incognito,
                                max_tokens=max_tokens, warn=printer.notice)
        if json_:
            printer.json(result.as_dict(a.models.chat().name))
        else:
            printer.markdown(result.content)
    else:
        with printer.stream() as stream:
            result = assistant.turn(a, text, piped=piped, conversation_id=conversation_id,
                                    use_memory=not no_memory, incognito=incognito,
                                    max_tokens=max_tokens, on_text=stream.write, warn=printer.notice)
    for n in a.models.notices:
        printer.notice(n)
    if result.generation.interrupted:
        printer.notice("interrupted: the partial answer was kept")
        raise typer.Exit(ExitStatus.INTERRUPTED)


def _conversation_to_continue(a, continue_: bool, conversation: int | None) -> int | None:
    if conversation is not None:
        if not a.store.conversation_exists(conversation):
            raise UsageError(f"no conversation with id {conversation}")
        return conversation
    if continue_:
        latest = a.store.latest_conversation()
        if latest is None:
            raise UsageError("no conversation to continue yet")
        return latest
    return None


# --- chat --------------------------------------------------------------------------------


@app.command()
def chat(
    ctx: typer.Context,
    continue_: bool = typer.Option(False, "-c", "--continue", help="Continue the latest conversation."),
    no_memory: bool = typer.Option(False, "--no-memory", help="Don't recall past conversations."),
    incognito: bool = typer.Option(False, "--incognito", help="Read nothing from memory, write nothing to it."),
    model: Optional[str] = typer.Option(None, "--model", help="Model: a GGUF path or hf:REPO/FILE."),
):
    """Open the interactive chat (REPL). /help lists its commands."""
    from mecli.repl import Repl

    state = _state(ctx)
    a = state.app(model)
    conversation_id = None if incognito else _conversation_to_continue(a, continue_, None)
    Repl(a, state.env, state.printer, conversation_id=conversation_id,
         use_memory=not no_memory, incognito=incognito).run()


# --- feedback and profile -------------------------------------------------------------


@app.command()
def feedback(
    ctx: typer.Context,
    text: List[str] = typer.Argument(..., help="The correction or preference, in your words."),
    to: Optional[int] = typer.Option(None, "--to", help="The answer (message id) it is about."),
    general: bool = typer.Option(False, "--general", help="A standing preference, about no answer."),
    json_: bool = typer.Option(False, "--json", help="Print the stored feedback as JSON."),
):
    """Record a correction about the latest answer (or --to an answer, or --general)."""
    from mecli import profile

    state = _state(ctx)
    a = state.app()
    result = profile.give_feedback(a, " ".join(text), to=to, general=general)
    if json_:
        state.printer.json(result)
        return
    about = f" about answer {result['message_id']}" if result["message_id"] else ""
    state.printer.notice(f"feedback {result['id']} recorded{about}")
    for r in result.get("rules") or []:
        state.printer.notice(f"rule {r['id']} ({r['status']}, support {r['support']}): {r['text']}")
    if result.get("note"):
        state.printer.notice(result["note"])


profile_app = typer.Typer(cls=TyperGroup, invoke_without_command=True, no_args_is_help=False,
                          help="The preference profile: rules learned from your feedback.")
app.add_typer(profile_app, name="profile")


@profile_app.callback(invoke_without_command=True)
def profile_show(
    ctx: typer.Context,
    json_: bool = typer.Option(False, "--json", help="Print {\"rules\": [...]} as JSON."),
    all_: bool = typer.Option(False, "--all", help="Include candidate and superseded rules."),
):
    """Show the active rules (with --all: candidates and superseded ones too)."""
    if ctx.invoked_subcommand:
        return
    state = _state(ctx)
    statuses = ("active", "candidate", "superseded") if all_ else ("active",)
    rules = state.app().store.rules(statuses)
    if json_:
        state.printer.json({"rules": rules})
        return
    if not rules:
        state.printer.notice("no rules yet: `me feedback TEXT` or `me profile add TEXT` adds one")
        return
    state.printer.table(
        ["id", "rule", "status", "support", "pinned", "last seen"],
        [[r["id"], r["text"], r["status"], r["support"], "yes" if r["pinned"] else "",
          r["last_seen"][:10]] for r in rules])


@profile_app.command("add")
def profile_add(ctx: typer.Context, text: List[str] = typer.Argument(..., help="The rule, e.g. 'Use metric units.'"),
                pin: bool = typer.Option(False, "--pin", help="Always prepend it, first."),
                json_: bool = typer.Option(False, "--json", help="Print the rule as JSON.")):
    """Add an active rule by hand."""
    from mecli import profile

    state = _state(ctx)
    rule = profile.add_rule(state.app(), " ".join(text), pin=pin)
    if json_:
        state.printer.json(rule)
    else:
        state.printer.notice(f"rule {rule['id']} added: {rule['text']}")


@profile_app.command("explain")
def profile_explain(ctx: typer.Context, rule_id: int = typer.Argument(..., metavar="ID"),
                    json_: bool = typer.Option(False, "--json", help="Print as JSON.")):
    """Show a rule and the feedback behind it."""
    from mecli import profile

    state = _state(ctx)
    rule, items = profile.explain(state.app(), rule_id)
    if json_:
        state.printer.json({"rule": rule, "feedback": items})
        return
    p = state.printer
    p.out(f"rule {rule['id']}: {rule['text']}")
    p.out(f"status: {rule['status']}  support: {rule['support']}  pinned: {rule['pinned']}  "
          f"first seen: {rule['first_seen']}  last seen: {rule['last_seen']}")
    if rule["superseded_by"]:
        p.out(f"superseded by rule {rule['superseded_by']}")
    if rule["manual"]:
        p.out("added by hand")
    p.table(["feedback", "source", "kind", "text", "about message", "when"],
            [[f["id"], f["source"], f["kind"], f["text"], f["message_id"], f["created_at"]]
             for f in items])


@profile_app.command("pin")
def profile_pin(ctx: typer.Context, rule_id: int = typer.Argument(..., metavar="ID")):
    """Pin a rule: always prepended, first."""
    from mecli import profile

    state = _state(ctx)
    rule = profile.set_pinned(state.app(), rule_id, True)
    state.printer.notice(f"rule {rule['id']} pinned: {rule['text']}")


@profile_app.command("unpin")
def profile_unpin(ctx: typer.Context, rule_id: int = typer.Argument(..., metavar="ID")):
    """Unpin a rule."""
    from mecli import profile

    state = _state(ctx)
    rule = profile.set_pinned(state.app(), rule_id, False)
    state.printer.notice(f"rule {rule['id']} unpinned")


@profile_app.command("rm")
def profile_rm(ctx: typer.Context, rule_id: int = typer.Argument(..., metavar="ID"),
               forget_sources: bool = typer.Option(False, "--forget-sources",
                                                   help="Also delete the feedback behind it.")):
    """Remove a rule (the feedback behind it stays, unless --forget-sources)."""
    from mecli import profile

    state = _state(ctx)
    counts = profile.remove_rule(state.app(), rule_id, forget_sources=forget_sources)
    extra = f", {counts['feedback']} feedback items deleted" if forget_sources else ""
    state.printer.notice(f"rule {rule_id} removed{extra}")


@profile_app.command("edit")
def profile_edit(ctx: typer.Context):
    """Edit the active and candidate rules in $EDITOR; the file is checked before saving."""
    from mecli import profile

    state = _state(ctx)
    summary = profile.edit_in_editor(state.app(), state.env)
    state.printer.notice(summary)


# --- history, show, search ----------------------------------------------------------------


@app.command()
def history(ctx: typer.Context,
            n: int = typer.Option(10, "-n", min=1, help="How many conversations."),
            json_: bool = typer.Option(False, "--json", help="Print as JSON.")):
    """List the latest conversations."""
    state = _state(ctx)
    rows = state.app().store.conversations(n)
    if json_:
        state.printer.json({"conversations": rows})
        return
    state.printer.conversations(rows)


@app.command()
def show(ctx: typer.Context, conversation_id: int = typer.Argument(..., metavar="ID"),
         json_: bool = typer.Option(False, "--json", help="Print as JSON.")):
    """Show a conversation."""
    state = _state(ctx)
    store = state.app().store
    conv = store.conversation(conversation_id)
    if conv is None:
        raise UsageError(f"no conversation with id {conversation_id}")
    messages = store.conversation_messages(conversation_id)
    if json_:
        state.printer.json({**conv, "messages": [m.as_dict() for m in messages]})
        return
    p = state.printer
    for m in messages:
        mark = " (interrupted)" if m.interrupted else ""
        p.out(f"--- {m.role} #{m.id} {m.created_at}{mark}")
        p.markdown(m.content) if m.role == "assistant" else p.out(m.content)


@app.command()
def search(ctx: typer.Context, query: List[str] = typer.Argument(..., help="What to look for."),
           k: int = typer.Option(10, "-k", min=1, help="How many results."),
           json_: bool = typer.Option(False, "--json", help="Print as JSON.")):
    """Search stored messages: words and meaning, fused (what recall uses)."""
    from mecli import memory

    state = _state(ctx)
    a = state.app()
    hits = memory.search(a.store, a.models, " ".join(query), k=k)
    for n in a.models.notices:
        state.printer.notice(n)
    if json_:
        state.printer.json({"results": [h.as_dict() for h in hits]})
        return
    if not hits:
        state.printer.notice("no matches")
        return
    _message_table(state.printer, [h.message for h in hits])


def _message_table(printer, messages) -> None:
    """Messages as `me search` and `me forget` list them."""
    printer.table(["id", "conv", "role", "when", "content"],
                  [[m.id, m.conversation_id, m.role, m.created_at[:10], _snippet(m.content)]
                   for m in messages])


def _snippet(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --- forget ------------------------------------------------------------------------------------


@app.command()
def forget(
    ctx: typer.Context,
    query: Optional[List[str]] = typer.Argument(None, help="Forget the messages that match this search."),
    id_: Optional[List[int]] = typer.Option(None, "--id", help="A message id (repeatable)."),
    conversation: Optional[int] = typer.Option(None, "--conversation", help="A whole conversation."),
    before: Optional[str] = typer.Option(None, "--before", help="Messages before this date (ISO 8601)."),
    since: Optional[str] = typer.Option(None, "--since", help="Messages since this date (ISO 8601)."),
    all_: bool = typer.Option(False, "--all", help="Everything: all history, feedback and rules."),
    k: int = typer.Option(20, "-k", min=1, help="With QUERY: how many matches at most."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Don't ask for confirmation."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be forgotten."),
    json_: bool = typer.Option(False, "--json", help="Print what was (or would be) forgotten as JSON."),
):
    """Delete messages for real, with everything derived from them.

    QUERY, --conversation, --before and --since narrow each other; --id adds
    messages. A QUERY also takes the feedback and rules that say it. Forgetting
    takes the feedback from or about the messages, the rules left without
    sources, the input-history lines and caches, and scrubs the database file.
    """
    from mecli import forgetting

    state = _state(ctx)
    p = state.printer
    a = state.app()
    text = " ".join(query or [])
    selection = forgetting.select(a.store, a.models, text, ids=id_ or [], conversation=conversation,
                                  before=before, since=since, everything=all_, k=k)
    for n in a.models.notices:
        p.notice(n)
    if selection.empty() and not selection.everything:
        what = f"matches {text.strip()!r}" if text.strip() else "matches"
        raise UsageError(f"nothing {what}: no message was forgotten")
    if not (yes or dry_run) and not state.env.stdin_isatty:
        raise UsageError("refusing to delete without confirmation: add --yes "
                         "(or --dry-run to only list)")
    n_msg, n_fb, n_rules = len(selection.messages), len(selection.feedback), len(selection.rules)
    summary = f"{n_msg} messages" + (f", {n_fb} feedback items" if n_fb else "") + (
        f", {n_rules} rules" if n_rules else "")
    if not json_:
        if selection.everything:
            p.notice(f"everything: {summary}, the input history and caches")
        else:
            _forget_tables(p, selection)
        if selection.truncated:
            p.notice(f"only the best {k} matches are listed; use -k to take more")
    if dry_run:
        if json_:
            p.json({"dry_run": True, **selection.as_dict()})
        else:
            p.notice(f"{summary} would be forgotten (dry run: nothing was deleted)")
        return
    if not yes:
        if not typer.confirm(f"Forget {summary} for good?", default=False, err=True):
            p.notice("nothing forgotten")
            raise typer.Exit(ExitStatus.SUCCESS)
    counts = forgetting.forget(a.store, a.paths, selection, models=a.models)
    if json_:
        p.json({"forgotten": counts, **selection.as_dict()})
    else:
        p.notice(f"forgotten: {counts['messages']} messages, {counts['feedback']} feedback items, "
                 f"{counts['rules']} rules, {counts['conversations']} conversations")
    if not counts.get("scrubbed", True):
        p.notice("another `me` is using the database: forgotten text may stay in its "
                 "write-ahead log until that one exits")


def _forget_tables(p, selection, limit: int = 200) -> None:
    if selection.messages:
        _message_table(p, selection.messages[:limit])
        if len(selection.messages) > limit:
            p.notice(f"... and {len(selection.messages) - limit} more messages")
    if selection.feedback:
        p.table(["feedback", "source", "when", "text"],
                [[f["id"], f["source"], f["created_at"][:10], _snippet(f["text"])]
                 for f in selection.feedback[:limit]])
    if selection.rules:
        p.table(["rule", "status", "text"],
                [[r["id"], r["status"], _snippet(r["text"])] for r in selection.rules[:limit]])


# --- import, export, reindex -----------------------------------------------------------------


@app.command("import")
def import_(
    ctx: typer.Context,
    file: str = typer.Argument(..., help="A JSONL file, or - for stdin."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Import the good lines, report the bad ones."),
    json_: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
):
    """Import messages (and feedback and rules from `me export`) from JSONL.

    Every line is checked first: a bad line (not JSON, a missing field) is
    reported by number and nothing is imported, unless --skip-bad. Messages
    already stored are skipped, so importing twice adds nothing.
    """
    from mecli import memory, transfer

    state = _state(ctx)
    if file == "-":
        if state.env.stdin_isatty:
            raise UsageError("`me import -` reads JSONL from stdin: pipe a file in")
        stream = getattr(state.env.stdin, "buffer", None)
        raw = stream.read() if stream is not None else state.env.stdin.read().encode("utf-8")
    else:
        try:
            with open(file, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise UsageError(f"cannot read {file}: {e.strerror or e}") from None
    # Checked before the database is opened: a bad file leaves it untouched.
    parsed = transfer.check_lines(transfer.read_lines(raw), skip_bad=skip_bad)
    a = state.app()
    report = transfer.import_records(a.store, parsed=parsed, skip_bad=skip_bad,
                                     min_support=a.config.rule_min_support)
    embedded = memory.embed_pending(a.store, a.models, limit=None) if report.messages else 0
    for n in a.models.notices:
        state.printer.notice(n)
    if json_:
        state.printer.json({**report.as_dict(), "embedded": embedded})
        return
    for err in report.skipped:
        state.printer.notice(f"skipped {err}")
    state.printer.notice(
        f"imported {report.messages} messages in {report.conversations} new conversations "
        f"({report.duplicates} already there), {report.feedback} feedback items, "
        f"{report.rules} rules; {report.learned} preferences detected")


@app.command()
def export(ctx: typer.Context):
    """Export messages, feedback and rules as JSONL on stdout (UTF-8)."""
    from mecli import transfer

    state = _state(ctx)
    a = state.app()
    if not a.paths.database.exists():
        return  # nothing stored yet (and exporting creates nothing)
    out = state.env.stdout
    buffer = getattr(out, "buffer", None)
    for line in transfer.export_lines(a.store):
        if buffer is not None:
            buffer.write(line.encode("utf-8"))
        else:
            out.write(line)
    (buffer or out).flush()


@app.command()
def reindex(ctx: typer.Context,
            json_: bool = typer.Option(False, "--json", help="Print the counts as JSON.")):
    """Embed every message with the current embedding model (after changing it)."""
    from mecli import memory

    state = _state(ctx)
    a = state.app()
    embedder = a.models.embedder()
    if embedder is None:
        raise MeError("; ".join(a.models.notices) or "no embedding model configured",
                      ExitStatus.USAGE)
    model_id = a.store.vec_model(embedder.key, embedder.dim)
    todo = a.store.count_without_vectors(model_id)
    if json_ or not state.printer.err_console.is_terminal:
        done = memory.embed_pending(a.store, a.models, limit=None)
    else:
        from rich.progress import Progress

        with Progress(console=state.printer.err_console, transient=True) as progress:
            task = progress.add_task("embedding", total=todo)
            done = memory.embed_pending(a.store, a.models, limit=None,
                                        progress=lambda n: progress.advance(task, n))
    # Vectors of other models are never used again: drop them (they hold derived data).
    dropped = [m for m in a.store.vec_models() if m["id"] != model_id]
    for m in dropped:
        a.store.drop_vec_model(m["id"])
    if json_:
        state.printer.json({"model": embedder.name, "dim": embedder.dim, "embedded": done,
                            "dropped_models": [m["name"] for m in dropped]})
    else:
        state.printer.notice(f"embedded {done} messages with {embedder.name}")
        for m in dropped:
            state.printer.notice(f"dropped {m['vectors']} vectors of the previous model {m['name']}")


# --- config, doctor --------------------------------------------------------------------------

config_app = typer.Typer(cls=TyperGroup, help="Where the config file is, what it says, and a starter file.")
app.add_typer(config_app, name="config")


@config_app.command("path")
def config_path(ctx: typer.Context):
    """Print the config file's path."""
    from mecli.config import Paths

    _state(ctx).printer.out(str(Paths.resolve(_state(ctx).env.environ).config_file))


@config_app.command("show")
def config_show(ctx: typer.Context, json_: bool = typer.Option(False, "--json", help="Print as JSON.")):
    """Print the configuration in effect (file, environment and defaults)."""
    from dataclasses import asdict

    state = _state(ctx)
    a = state.app()
    values = {k: v for k, v in asdict(a.config).items() if k != "source"}
    if json_:
        state.printer.json({"file": a.config.source, "config": values})
        return
    state.printer.out(f"# {a.config.source or 'no config file: defaults'}")
    for k, v in values.items():
        state.printer.out(f"{k} = {_toml_value(v)}")


def _toml_value(v) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(v)


@config_app.command("init")
def config_init(ctx: typer.Context, force: bool = typer.Option(False, "--force", help="Overwrite an existing file.")):
    """Write a commented starter config.toml."""
    from mecli.config import Paths, example_config_text

    state = _state(ctx)
    path = Paths.resolve(state.env.environ).config_file
    if path.exists() and not force:
        raise UsageError(f"{path} exists (use --force to overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(example_config_text(), encoding="utf-8")
    state.printer.notice(f"wrote {path}")


@app.command()
def doctor(ctx: typer.Context, json_: bool = typer.Option(False, "--json", help="Print as JSON.")):
    """Check the model, GPU offload, database and sqlite-vec."""
    from mecli import doctor as doc

    state = _state(ctx)
    checks = doc.run(state.app())
    if json_:
        state.printer.json({"checks": checks})
    else:
        state.printer.table(["check", "ok", "detail"],
                            [[c["name"], "yes" if c["ok"] else "NO", c["detail"]] for c in checks])
    if not all(c["ok"] for c in checks if c.get("required")):
        raise typer.Exit(ExitStatus.ERROR)


# --- entry point -------------------------------------------------------------------------------


def _click_exceptions():
    """Click's exception classes: typer >= 0.22 vendors click, older typer uses it."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def main() -> None:
    """The console script."""
    sys.exit(run())


def run(args: list[str] | None = None, env: Environment | None = None) -> int:
    """Run `me` with these arguments and streams; returns the exit status."""
    env = env or Environment()
    args = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    state = State(env)
    command = typer.main.get_command(app)
    click = _click_exceptions()
    status = ExitStatus.SUCCESS
    try:
        # Without standalone mode, click returns the code of a typer.Exit instead of raising.
        returned = command.main(args=args, prog_name="me", obj=state, standalone_mode=False)
        if isinstance(returned, int):
            status = returned
    except MeError as e:
        state.printer.error(e.message)
        status = e.status
        if debug:
            traceback.print_exc(file=env.stderr)
    except typer.Exit as e:
        status = e.exit_code
    except click.ClickException as e:
        e.show(file=env.stderr)
        status = ExitStatus.USAGE if isinstance(e, click.UsageError) else e.exit_code
    except (KeyboardInterrupt, typer.Abort, getattr(click, "Abort", typer.Abort)):
        env.stderr.write("\ninterrupted\n")
        status = ExitStatus.INTERRUPTED
    except BrokenPipeError:
        status = ExitStatus.SUCCESS
    except Exception as e:  # a bug: one line, the traceback only with --debug
        state.printer.error(f"unexpected {type(e).__name__}: {e} (run with --debug for details)")
        if debug:
            traceback.print_exc(file=env.stderr)
        status = ExitStatus.ERROR
    finally:
        try:
            state.close()
        except Exception:
            pass
    return int(status)
