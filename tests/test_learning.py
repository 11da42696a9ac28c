"""Learning from feedback: detection, phrasing, distillation (unit), and the `me` commands that
use them (end to end, with a temp ME_HOME).

Unit tests call mecli.learning directly. End-to-end tests drive the real `me` as a subprocess
(fixture `me`) for the main flows, mostly through `me import` and `me feedback`, which don't load
the chat model; one test chats with the bundled model (`--max-tokens 4`) to cover the turn.
The many small profile checks run the same command in-process (`me_in`: `mecli.cli.run` with
injected streams and environment), which is ten times faster on a busy machine.
"""

from __future__ import annotations

import io
import json
import sys
import textwrap

import pytest

from conftest import Result

from mecli import learning
from mecli.learning import analyze, detect, phrase, phrase_all

# --- detection and phrasing ---------------------------------------------------------------


@pytest.mark.parametrize("text, key, standing", [
    ("no, I meant Celsius", "units=metric", False),
    ("stop apologizing", "apology=no", False),
    ("I told you I'm vegetarian", "diet=vegetarian", True),
    ("I prefer short answers", "length=short", True),
    ("I'm allergic to nuts", "food:nut=no", True),
    ("call me Sam", "name=sam", True),
    ("never use emojis", "emoji=no", True),
    ("from now on use metric units", "units=metric", True),
    ("actually, use imperial now", "units=imperial", True),
    ("way too long", "length=short", False),
    ("Your answers are too short, give me more detail", "length=long", False),
    ("kilometres, not miles please", "units=metric", False),
    ("I'd prefer bullet points over long paragraphs.", "format=bullets", True),
    ("You don't need to say sorry every time.", "apology=no", True),
    ("You forgot to mention your sources.", "sources=yes", False),
    ("Actually, emojis are fine now.", "emoji=yes", True),
    ("Could you always answer in French?", "language=french", True),
    ("Use the 24-hour clock, I find AM/PM confusing.", "clock=24h", True),
    ("I'm in the UK so use pounds.", "currency=gbp", True),
    ("Hi, I'm Lena by the way.", "name=lena", True),
    ("I'm coeliac, so it has to be gluten-free.", "food:gluten=no", True),
])
def test_detects_and_phrases_varied_phrasings(text, key, standing):
    assert detect(text), text
    items = analyze(text)
    assert key in [i.subject for i in items], items
    item = next(i for i in items if i.subject == key)
    assert item.standing is standing
    assert item.rule.endswith(".") and item.rule[0].isupper() and len(item.rule) < 120


@pytest.mark.parametrize("text", [
    "I prefer not to say, but what is the boiling point of water?",
    "I prefer not to say how old I am, but will 8 GB of RAM be enough",
    "Never mind, how do I undo the last git commit?",
    "never mind. how do I reverse a list in python",
    "Do you always answer like that?",
    "I always forget the syntax for list comprehensions.",
    "My name is on the lease but not my partner's.",
    "Call me crazy, but is pineapple on pizza common in Italy",
    "Stop words in NLP, what are they used for",
    "Always Be Closing, which movie is that from",
    "I hate Mondays.",
    "I meant to ask earlier: do I need to book seats",
    "No, that's perfect, thanks.",
    "I ran 10 miles today, how many calories is that",
    "I want to convert 5 miles to km",
    "Please write a summary of this article",
    "Don't give up on your dreams!",
    "Life's too short, let's have some fun!",
    "Keep calm and carry on, where does that slogan come from",
    "Her name's Coco and she's adorable.",
    "Why do you never use metric?",
])
def test_ordinary_chat_is_not_feedback(text):
    assert detect(text) == [], analyze(text)


def test_one_off_remarks_are_not_standing():
    for text in ("Use JavaScript this time, it runs in the browser.",
                 "Be more detailed here, this is for my exam.",
                 "For this email to the landlord, be more formal."):
        items = analyze(text)
        assert items and all(i.one_off and not i.standing for i in items), (text, items)


def test_free_form_rules_outside_the_lexicon():
    p = phrase('Never use the word "delve", it sounds robotic.')
    assert p.rule.startswith('Never use the word "delve"') and p.standing and not p.positive
    p = phrase("If my request is vague, always ask a clarifying question first.")
    assert p.rule == "If the user's request is vague, always ask a clarifying question first."
    # Two paraphrases of one free-form rule have keys that group together.
    a = phrase('Please stop starting every answer with "Great question!"')
    b = phrase('Again with the "great question".')
    assert learning._same(a.subject, b.subject) or learning._free_similar(a.subject, b.subject)


def test_explicit_feedback_can_state_several_rules():
    keys = {p.subject for p in phrase_all("Use metric units and the 24-hour clock, no emojis.")}
    assert {"units=metric", "clock=24h", "emoji=no"} <= keys
    assert phrase("") is None and phrase("   ") is None
    assert phrase("wrong year, it was 1969") is None


# --- distillation ---------------------------------------------------------------------------


def _learn(store, text, explicit=False, min_support=2):
    fid = store.add_feedback("explicit" if explicit else "implicit", "correction", text)
    return learning.learn(store, fid, text, explicit=explicit, min_support=min_support)


def test_recurring_correction_becomes_active(store):
    first = _learn(store, "no, I meant Celsius")
    assert first["action"] == "added" and first["status"] == "candidate"
    second = _learn(store, "kilometres, not miles please")
    assert second == {"action": "activated", "rule_id": first["rule_id"], "support": 2}
    rule = store.rule(first["rule_id"])
    assert rule["status"] == "active" and len(rule["sources"]) == 2


def test_standing_instruction_is_active_at_once(store):
    out = _learn(store, "never use emojis")
    assert store.rule(out["rule_id"])["status"] == "active"
    out = _learn(store, "use a table for this one", explicit=True)  # explicit, but a one-off
    assert store.rule(out["rule_id"])["status"] == "candidate"


def test_reversal_supersedes_and_keeps_the_old_rule(store):
    old = _learn(store, "from now on use metric units")["rule_id"]
    out = _learn(store, "actually, use imperial now")
    assert out["action"] == "superseded" and out["superseded"] == old
    assert store.rule(old)["status"] == "superseded"
    assert store.rule(old)["superseded_by"] == out["rule_id"]
    assert store.rule(out["rule_id"])["status"] == "active"
    # Back again: a new active rule, the history stays.
    back = _learn(store, "Please use metric again from now on")
    assert store.rule(back["rule_id"])["status"] == "active"
    assert store.rule(out["rule_id"])["status"] == "superseded"
    assert len(store.rules()) == 3


def test_one_off_contradiction_does_not_supersede(store):
    short = _learn(store, "I prefer short answers")["rule_id"]
    detail = _learn(store, "Be more detailed here, this one matters.")
    assert store.rule(detail["rule_id"])["status"] == "candidate"
    assert store.rule(short)["status"] == "active"
    # ... unless it recurs: then the newer preference wins.
    again = _learn(store, "Your answers are too short again, give me more detail")
    assert again["action"] == "activated" and again["superseded"] == short
    assert store.rule(short)["status"] == "superseded"


def test_one_message_counts_once(store):
    mid_conv = store.new_conversation()
    mid = store.add_message(mid_conv, "user", "x")
    out = learning.observe_user_message(
        store, mid, "No sources again. Please always include where the info comes from.", None, 2)
    assert len(out) == 1
    assert store.rule(out[0]["rule_id"])["support"] == 1
    assert store.rule(out[0]["rule_id"])["status"] == "active"  # "always": standing


def test_profile_for_prompt_budget_and_relevance(store):
    for text in ("call me Sam", "never use emojis", "I prefer short answers",
                 "from now on use metric units", "I'm vegetarian", "always write code in Python"):
        _learn(store, text)
    _learn(store, "no, I meant Lisbon, not Porto")  # a candidate
    always, relevant = learning.profile_for_prompt(store, "hello there", 300)
    assert len(always) == 6 and relevant == []
    # A tight budget keeps the rules for every answer; topical ones come back when relevant.
    always, relevant = learning.profile_for_prompt(store, "what's the weather in Lisbon?", 30)
    texts = [r["text"] for r in always + relevant]
    assert "Call the user Sam." in texts and "Never use emojis." in texts
    assert any("metric" in t for t in texts)  # weather -> units
    assert any("Lisbon" in t for t in texts)  # a candidate sharing a word
    assert not any("vegetarian" in t for t in texts)
    always, relevant = learning.profile_for_prompt(store, "suggest a dinner recipe", 30)
    assert any("vegetarian" in r["text"] for r in relevant)


# --- end to end: the real `me` ------------------------------------------------------------------


@pytest.fixture
def me_in(me_env):
    """`me` in-process: the real CLI (argument parsing, commands, exit codes), injected streams."""
    from mecli.cli import run
    from mecli.environment import Environment

    def call(*args: str, env: dict | None = None) -> Result:
        full = dict(me_env)
        full.update(env or {})
        out, err = io.StringIO(), io.StringIO()
        code = run(list(args), Environment(stdin=io.StringIO(""), stdout=out, stderr=err,
                                           environ=full))
        return Result(code, out.getvalue(), err.getvalue())

    return call


def _import(me, tmp_path, messages, name="chat.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(m) + "\n" for m in messages))
    r = me("import", str(path), "--json")
    assert r.returncode == 0, r.stderr
    return r.json()


def _conversation(cid, *turns, day="2024-03-01"):
    return [{"conversation": cid, "role": "user" if i % 2 == 0 else "assistant", "content": t,
             "created_at": f"{day}T10:{i:02d}:00Z", "id": f"{cid}-{i}"} for i, t in enumerate(turns)]


def _system(me, prompt):
    r = me("--dry-run", prompt)
    assert r.returncode == 0, r.stderr
    return r.json()["messages"][0]["content"]


def _rules(me, *flags):
    r = me("profile", "--json", *flags)
    assert r.returncode == 0, r.stderr
    return r.json()["rules"]


def test_feedback_in_one_session_shows_up_in_the_next(me, tmp_path, store):
    _import(me, tmp_path, _conversation("weather", "How warm is Lisbon in July?",
                                        "Highs around 82°F."))
    answer = store.latest_assistant_message().id
    r = me("feedback", "--json", "no, I meant Celsius")
    assert r.returncode == 0, r.stderr
    fb = r.json()
    assert isinstance(fb["id"], int) and fb["message_id"] == answer and fb["source"] == "explicit"
    assert fb["rule"]["status"] == "active"  # `me feedback` is a standing instruction
    # The next session: the prompt carries it, and so does the profile.
    system = _system(me, "What's the weather in Oslo in March?")
    assert "Use metric units (Celsius, kilometres, kilograms)." in system
    rules = _rules(me)
    assert len(rules) == 1
    rule = rules[0]
    for key in ("id", "text", "status", "support", "sources"):
        assert key in rule
    assert rule["status"] == "active" and rule["support"] == 1 and rule["sources"] == [fb["id"]]
    r = me("profile")  # the table, plain when piped
    assert r.returncode == 0 and "Celsius" in r.stdout and "\x1b[" not in r.stdout


def test_recurring_implicit_correction_becomes_active_one_off_stays_candidate(me, tmp_path):
    _import(me, tmp_path, _conversation(
        "s1", "How far is a marathon?", "26.2 miles.", "kilometres, not miles please", "42.2 km.",
        "Compare Postgres and SQLite", "- Postgres: server\n- SQLite: a file",
        "No, I meant a table, not a list.", "| | Postgres | SQLite |"), "s1.jsonl")
    rules = _rules(me, "--all")
    assert [r["status"] for r in rules] == ["candidate", "candidate"]  # said once each
    _import(me, tmp_path, _conversation(
        "s2", "How warm is Rome in May?", "About 75°F.", "no, I meant Celsius", "About 24 °C.",
        day="2024-03-05"), "s2.jsonl")
    rules = {r["text"]: r for r in _rules(me, "--all")}
    metric = rules["Use metric units (Celsius, kilometres, kilograms)."]
    assert metric["status"] == "active" and metric["support"] == 2 and len(metric["sources"]) == 2
    assert rules["Use tables for comparisons."]["status"] == "candidate"
    assert [r["text"] for r in _rules(me)] == [metric["text"]]  # without --all: active only


def test_recurring_correction_in_chat_with_the_model(me, tmp_path):
    _import(me, tmp_path, _conversation("s1", "Explain DNS", "DNS is ... (six paragraphs)",
                                        "way too long, keep it short", "DNS maps names to IPs."))
    assert [r["status"] for r in _rules(me, "--all")] == ["candidate"]
    r = me("--json", "What is TCP? Shorter please, just the key points.", "--max-tokens", "4")
    assert r.returncode == 0, r.stderr
    assert r.json()["learned"] and r.json()["learned"][0]["action"] == "activated"
    rules = _rules(me)
    assert len(rules) == 1 and rules[0]["text"] == "Keep answers short and to the point."
    assert "Keep answers short" in _system(me, "What is UDP?")


def test_reversal_supersedes(me, tmp_path):
    _import(me, tmp_path, _conversation("s1", "Please use metric units from now on.", "Will do."))
    [metric] = _rules(me)
    r = me("feedback", "--json", "actually, use imperial now")
    assert r.returncode == 0, r.stderr
    assert r.json()["outcome"]["superseded"] == metric["id"]
    active = _rules(me)
    assert [r["text"] for r in active] == ["Use imperial units (Fahrenheit, miles, pounds)."]
    everything = {r["id"]: r for r in _rules(me, "--all")}
    old = everything[metric["id"]]
    assert old["status"] == "superseded" and old["superseded_by"] == active[0]["id"]
    system = _system(me, "How cold is Chicago in winter?")
    assert "imperial" in system and "metric" not in system
    r = me("profile", "--all")
    assert "superseded" in r.stdout


def test_profile_add_pin_unpin_rm_explain(me_in, tmp_path):
    me = me_in
    r = me("profile", "add", "--json", "Never use the word delve")
    assert r.returncode == 0, r.stderr
    added = r.json()
    assert added["status"] == "active" and added["manual"] and added["text"] == "Never use the word delve."
    _import(me, tmp_path, _conversation("s1", "call me Sam", "Hi Sam!", "I prefer short answers",
                                        "Sure."))
    rules = {r["text"]: r for r in _rules(me)}
    sam = rules["Call the user Sam."]
    # explain: the feedback behind a rule, with its source and time.
    r = me("profile", "explain", str(sam["id"]), "--json")
    assert r.returncode == 0, r.stderr
    doc = r.json()
    assert doc["rule"]["id"] == sam["id"]
    assert [f["source"] for f in doc["feedback"]] == ["implicit"] and doc["feedback"][0]["created_at"]
    assert "call me Sam" in doc["feedback"][0]["text"]
    assert me("profile", "explain", str(sam["id"])).returncode == 0
    # pin: first in the prompt.
    assert me("profile", "pin", str(added["id"])).returncode == 0
    first = [r for r in _rules(me) if r["pinned"]]
    assert [r["id"] for r in first] == [added["id"]]
    system = _system(me, "hello")
    lines = [line for line in system.splitlines() if line.startswith("- ")]
    assert lines[0] == "- Never use the word delve."
    assert me("profile", "unpin", str(added["id"])).returncode == 0
    assert not any(r["pinned"] for r in _rules(me))
    # rm: gone from the profile and the prompt; the feedback stays unless --forget-sources.
    assert me("profile", "rm", str(sam["id"])).returncode == 0
    assert "Sam" not in _system(me, "hello")
    assert all(r["id"] != sam["id"] for r in _rules(me, "--all"))
    for args in (("pin", "999"), ("rm", "999"), ("explain", "999")):
        r = me("profile", *args)
        assert r.returncode == 2 and "no rule with id 999" in r.stderr and "Traceback" not in r.stderr


def test_profile_add_supersedes_a_contradicting_rule(me_in):
    me = me_in
    metric = me("profile", "add", "--json", "Use metric units").json()
    imperial = me("profile", "add", "--json", "Use imperial units").json()
    assert imperial["superseded"] == [metric["id"]]
    assert [r["id"] for r in _rules(me)] == [imperial["id"]]
    r = me("profile", "add", "  ")
    assert r.returncode == 2 and "empty rule" in r.stderr
    # Pinning the superseded rule brings it back, and it supersedes the other: the user's choice.
    assert me("profile", "pin", str(metric["id"])).returncode == 0
    assert [r["id"] for r in _rules(me)] == [metric["id"]]
    assert {r["id"]: r["status"] for r in _rules(me, "--all")}[imperial["id"]] == "superseded"
    # Rules by hand on one subject with other words are kept side by side; the same text merges.
    for i in range(3):
        me("profile", "add", f"For topic {i}, start with background and cite a source.")
    me("profile", "add", "for topic 0, start with background and cite a source")
    assert sum("For topic" in r["text"] for r in _rules(me)) == 3


EDITOR_SCRIPT = """\
import sys
path = sys.argv[1]
text = open(path).read()
{body}
open(path, "w").write(text)
"""


def _editor(tmp_path, body: str) -> dict:
    script = tmp_path / "editor.py"
    script.write_text(EDITOR_SCRIPT.format(body=textwrap.dedent(body)))
    return {"EDITOR": f"{sys.executable} {script}", "VISUAL": ""}


def test_profile_edit_applies_a_valid_edit(me_in, tmp_path):
    me = me_in
    keep = me("profile", "add", "--json", "Never use emojis").json()
    drop = me("profile", "add", "--json", "Call the user Sam").json()
    env = _editor(tmp_path, f"""
        lines = [l for l in text.splitlines() if not l.startswith("{drop['id']} |")]
        lines = [l.replace("| Never use emojis.", "| Never use emojis or emoticons.") for l in lines]
        lines.append("new | pinned | Answer in French.")
        text = "\\n".join(lines) + "\\n"
    """)
    r = me("profile", "edit", env=env)
    assert r.returncode == 0, r.stderr
    assert "1 added, 1 changed, 1 removed" in r.stderr
    rules = {r["text"]: r for r in _rules(me)}
    assert set(rules) == {"Never use emojis or emoticons.", "Answer in French."}
    assert rules["Never use emojis or emoticons."]["id"] == keep["id"]
    assert rules["Answer in French."]["pinned"]


BAD_EDITS = [
    ('text += "this line has no pipes at all\\n"', "expected 'ID | active|candidate|pinned | text'"),
    ('text += "new | active | Use imperial units.\\n"', "contradict each other"),
    ('text += "999 | active | Something.\\n"', "no rule with id 999"),
    ('text += "new | maybe | Something.\\n"', "unknown status"),
    ('text += "new | active |   \\n"', "the rule text is empty"),
    ('text = ""', "the file is empty"),
]


def test_profile_edit_refuses_a_bad_file_and_changes_nothing(me_in, me, tmp_path):
    me_in("profile", "add", "Use metric units")
    me_in("profile", "add", "Never use emojis")
    before = _rules(me_in, "--all")
    for body, message in BAD_EDITS:
        r = me_in("profile", "edit", env=_editor(tmp_path, body))
        assert r.returncode == 2, (body, r.stderr)
        assert message in r.stderr and "profile unchanged" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert _rules(me_in, "--all") == before
    # The same through the real process: one line on stderr, exit 2.
    r = me("profile", "edit", env=_editor(tmp_path, BAD_EDITS[1][0]))
    assert r.returncode == 2 and r.stderr.startswith("me: error: profile unchanged: rules")
    assert len(r.stderr.strip().splitlines()) == 1 and _rules(me_in, "--all") == before


def test_profile_edit_with_no_change_and_failing_editor(me_in, tmp_path):
    me = me_in
    me("profile", "add", "Never use emojis")
    r = me("profile", "edit", env=_editor(tmp_path, "pass"))
    assert r.returncode == 0 and "profile unchanged" in r.stderr
    r = me("profile", "edit", env=_editor(tmp_path, "sys.exit(3)"))
    assert r.returncode == 1 and "profile unchanged" in r.stderr
    r = me("profile", "edit", env={"EDITOR": "/nonexistent/editor", "VISUAL": ""})
    assert r.returncode == 2 and "cannot run editor" in r.stderr
    assert len(_rules(me)) == 1


def test_feedback_bad_input(me, me_in, store, tmp_path):
    r = me("feedback", "   ")  # the real process: exit 2, one line, no traceback
    assert r.returncode == 2 and r.stderr == "me: error: empty feedback: say what should change\n"
    me = me_in
    r = me("feedback", "x" * 50_000)
    assert r.returncode == 2 and "characters" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = me("feedback", "--to", "12345", "too long")
    assert r.returncode == 2 and "no message with id 12345" in r.stderr
    assert store.counts()["feedback"] == 0 and store.counts()["rules"] == 0
    # No answer yet: a general preference about no answer in particular.
    r = me("feedback", "--json", "I prefer short answers")
    assert r.returncode == 0, r.stderr
    doc = r.json()
    assert doc["message_id"] is None and doc["general"] and doc["rule"]["status"] == "active"
    # An id that is the user's message, not an answer.
    _import(me, tmp_path, _conversation("s1", "hello", "hi"))
    user_id = store.conversation_messages(store.conversations(1)[0]["id"])[0].id
    r = me("feedback", "--to", str(user_id), "too long")
    assert r.returncode == 2 and "not an answer" in r.stderr
    # Feedback with nothing general in it is kept, and says so.
    r = me("feedback", "--json", "wrong year, it was 1969")
    assert r.returncode == 0 and r.json()["rules"] == [] and "no general rule" in r.json()["note"]
    assert store.counts()["feedback"] == 2


def test_import_ignores_ordinary_chat_and_learns_preferences(me_in, tmp_path):
    me = me_in
    report = _import(me, tmp_path, _conversation(
        "s1",
        "I prefer not to say, but what is the average salary of a nurse?", "About 40k.",
        "Never mind, how do I undo the last git commit?", "git reset --soft HEAD~1",
        "Do you always answer like that?", "I try to be brief.",
        "I'm allergic to nuts, so no pesto for me.", "Noted."))
    assert report["learned"] == 1
    [rule] = _rules(me, "--all")
    assert rule["text"].startswith("The user is allergic to nuts") and rule["status"] == "active"
    assert "allergic to nuts" in _system(me, "Suggest a snack for a hike.")
