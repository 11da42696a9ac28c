"""The assistant turn: store, recall, build the prompt, generate, store, learn.

`turn()` is the whole path of one answer, for the one-shot command and the
REPL alike. The prompt is ordered from most stable to least (system prompt,
standing profile, recalled preferences and memories, conversation, new
message) so the evaluated prefix can be reused by the next turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from mecli import learning, memory
from mecli.config import Config, Paths
from mecli.db import Message, Store
from mecli.environment import MeError, UsageError
from mecli.models import Generation, Models

HISTORY_MESSAGES = 20  # at most this many earlier turns of the conversation are sent


@dataclass
class App:
    """What every command works with; the store is opened on first use."""

    config: Config
    paths: Paths
    models: Models
    _store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.paths.database)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


@dataclass
class Prompt:
    """Everything that goes to the model for one answer, and where it came from."""

    messages: list[dict]
    stable_text: str = ""  # the system prompt and standing profile: the reusable prefix
    memory_text: str = ""  # the recalled memory block, last in the system message
    rules: list[dict] = field(default_factory=list)
    recalled: list[Message] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


@dataclass
class Turn:
    conversation_id: int | None
    user_message_id: int | None
    message_id: int | None
    content: str
    generation: Generation
    prompt: Prompt
    learned: list[dict] = field(default_factory=list)

    def as_dict(self, model: str) -> dict:
        return {
            "id": self.message_id,
            "conversation_id": self.conversation_id,
            "user_message_id": self.user_message_id,
            "content": self.content,
            "model": model,
            "interrupted": self.generation.interrupted,
            "timings": self.generation.timings(),
            "recalled": [m.id for m in self.prompt.recalled],
            "rules": [r["id"] for r in self.prompt.rules],
            "learned": self.learned,
        }


def user_content(prompt: str, piped: str | None) -> str:
    """The user's message: what they typed, then what they piped in."""
    prompt = prompt.strip()
    if piped and piped.strip():
        return f"{prompt}\n\n{piped.rstrip()}" if prompt else piped.rstrip()
    return prompt


def build_prompt(app: App, text: str, conversation_id: int | None, *, use_memory: bool,
                 incognito: bool, history: list[Message] | None = None) -> Prompt:
    """The messages for the model, most stable first."""
    config = app.config
    system = [config.system_prompt]
    prompt = Prompt(messages=[])
    if not incognito:
        store = app.store
        always, relevant = learning.profile_for_prompt(store, text, config.profile_tokens)
        prompt.rules = always + relevant
        if always:
            system.append(learning.profile_block(always, []))
    prompt.stable_text = "\n\n".join(system)
    if not incognito:
        if relevant:
            system.append(learning.profile_block([], relevant))
        if use_memory:
            recalled = memory.recall(store, app.models, text, conversation_id,
                                     config.memory_tokens, config.memory_results)
            prompt.recalled = [hit for hit, _ in recalled]
            prompt.memory_text = memory.memory_block(recalled)
            if prompt.memory_text:
                system.append(prompt.memory_text)
        if history is None and conversation_id is not None:
            history = store.conversation_messages(conversation_id, limit=HISTORY_MESSAGES)
    messages = [{"role": "system", "content": "\n\n".join(system)}]
    messages += [{"role": m.role, "content": m.content} for m in history or []]
    messages.append({"role": "user", "content": text})
    prompt.messages = messages
    prompt.notices = list(app.models.notices)
    return prompt


def fit_to_context(app: App, prompt: Prompt, max_tokens: int, piped: str | None,
                   warn: Callable[[str], None]) -> int:
    """Make the prompt fit the chat model's context; returns the answer's token budget.

    Drops the oldest conversation turns first, then the recalled memory, then
    trims piped input (saying how much was cut). A typed prompt is never cut.
    """
    model = app.models.chat()
    reserve = min(max_tokens, max(64, model.n_ctx // 4))
    limit = model.n_ctx - reserve  # prompt tokens that leave room for the answer

    def count() -> int:  # tokenizes the whole prompt: only after a change
        return len(model.prompt_tokens(prompt.messages)[0])

    size = count()
    while size > limit and len(prompt.messages) > 2:
        del prompt.messages[1]  # the oldest history message
        size = count()
    if size > limit and prompt.memory_text:
        system = prompt.messages[0]["content"]
        prompt.messages[0]["content"] = system[: system.rindex(prompt.memory_text)].rstrip()
        prompt.recalled, prompt.memory_text = [], ""
        size = count()
    if size > limit and piped:
        user = prompt.messages[-1]["content"]
        piped_tokens = model.count_tokens(piped)
        keep_tokens = piped_tokens - (size - limit) - 16
        if keep_tokens <= 0:
            raise UsageError(f"prompt is too long for the model's context of {model.n_ctx} tokens")
        keep_chars = int(len(piped) * keep_tokens / max(piped_tokens, 1))
        while keep_chars > 0:
            trimmed = piped[:keep_chars]
            prompt.messages[-1]["content"] = user.replace(piped.rstrip(), trimmed.rstrip())
            size = count()
            if size <= limit:
                break
            keep_chars = int(keep_chars * 0.9)
        warn(f"piped input trimmed to fit the model's context: kept {keep_chars:,} of "
             f"{len(piped):,} characters")
    if size > limit:
        raise UsageError(f"prompt is {size} tokens, too long for the model's context of "
                         f"{model.n_ctx} tokens (leave room for the answer)")
    return min(max_tokens, model.n_ctx - size)


def turn(app: App, prompt_text: str, *, piped: str | None = None,
         conversation_id: int | None = None, use_memory: bool = True, incognito: bool = False,
         max_tokens: int | None = None, on_text: Callable[[str], None] | None = None,
         warn: Callable[[str], None] = lambda s: None,
         history: list[Message] | None = None) -> Turn:
    """One answer. The user's message is committed before generation starts, and an
    answer cut short by Ctrl-C is kept, marked interrupted."""
    text = user_content(prompt_text, piped)
    if not text:
        raise UsageError("empty prompt: say something, or pipe text in")
    max_tokens = max_tokens or app.config.max_tokens
    model = app.models.chat()  # load first: a bad model leaves the database untouched

    prompt = build_prompt(app, text, conversation_id, use_memory=use_memory, incognito=incognito,
                          history=history)
    budget = fit_to_context(app, prompt, max_tokens, piped, warn)
    text = prompt.messages[-1]["content"]

    user_id = None
    if not incognito:
        store = app.store
        if conversation_id is None:
            conversation_id = store.new_conversation()
        previous_answer = store.conversation_messages(conversation_id, limit=1)
        user_id = memory.store_message(store, conversation_id, "user", text)

    # Incognito writes nothing, not even a saved prefix state.
    generation = model.generate(prompt.messages, budget, on_text=on_text,
                                stable_text="" if incognito else prompt.stable_text)

    result = Turn(conversation_id, user_id, None, generation.text, generation, prompt)
    if incognito:
        return result
    store = app.store
    result.message_id = memory.store_message(
        store, conversation_id, "assistant", generation.text, model=model.name,
        interrupted=generation.interrupted, **generation.timings())
    about = previous_answer[0].id if previous_answer and previous_answer[0].role == "assistant" else None
    result.learned = learning.observe_user_message(store, user_id, text, about,
                                                   app.config.rule_min_support)
    if not generation.interrupted:
        # After the answer, never before the first token.
        try:
            memory.embed_pending(store, app.models, limit=64)
        except MeError as e:
            warn(e.message)
    return result
