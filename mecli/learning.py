"""Learning from feedback: detect it, distil it into profile rules, use them.

Everything here is deterministic (patterns and word overlap), so it works the
same on a 135M model as on a large one: no JSON, no tool calls.

- detect(): finds corrections and standing preferences in what the user wrote.
- phrase(): turns one feedback text into a short imperative rule and a subject.
- learn(): groups a new feedback item with the rule it repeats (support grows),
  supersedes a rule on the same subject that it contradicts, or starts a
  candidate. A rule is active when stated as a standing instruction or when
  its support reaches `rule_min_support`.
- profile_for_prompt(): the active rules (and relevant candidates) for a prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mecli.db import Store, now_iso

# --- phrasing -------------------------------------------------------------------

# Subjects a preference can be about, and the values that mean the same thing.
# Two rules on one subject with different values contradict each other.
SUBJECTS: dict[str, dict[str, str]] = {
    "units": {"metric": "metric", "celsius": "metric", "kilometers": "metric", "kilometres": "metric",
              "km": "metric", "kg": "metric", "kilograms": "metric", "meters": "metric",
              "metres": "metric", "imperial": "imperial", "fahrenheit": "imperial",
              "miles": "imperial", "pounds": "imperial", "lbs": "imperial", "feet": "imperial",
              "inches": "imperial"},
    "length": {"short": "short", "shorter": "short", "brief": "short", "concise": "short",
               "terse": "short", "succinct": "short", "long": "long", "longer": "long",
               "detailed": "long", "thorough": "long", "verbose": "long", "in-depth": "long"},
    "language": {w: w for w in ("english", "french", "spanish", "german", "italian", "portuguese",
                                "dutch", "japanese", "chinese", "russian", "polish", "swedish")},
    "tone": {"formal": "formal", "casual": "casual", "informal": "casual", "friendly": "casual"},
    "format": {"bullet": "bullets", "bullets": "bullets", "bulleted": "bullets",
               "prose": "prose", "paragraphs": "prose", "table": "table", "tables": "table",
               "numbered": "numbered"},
    "indentation": {"tabs": "tabs", "spaces": "spaces"},
    "code_language": {w: w for w in ("python", "javascript", "typescript", "rust", "golang",
                                     "java", "ruby", "bash", "c++")},
    "emoji": {"emoji": "emoji", "emojis": "emoji", "emoticons": "emoji"},
    "diet": {"vegetarian": "vegetarian", "vegan": "vegan", "pescatarian": "pescatarian"},
    "date_format": {"iso": "iso", "yyyy-mm-dd": "iso", "dd/mm/yyyy": "dmy", "mm/dd/yyyy": "mdy"},
    "clock": {"24-hour": "24h", "24h": "24h", "12-hour": "12h", "12h": "12h", "am/pm": "12h"},
}
# Subjects where a reversal is said by negating the same value ("never use emojis" vs "use emojis").
POLAR_SUBJECTS = {"emoji"}

STANDING_CUES = re.compile(
    r"\b(always|never|from now on|going forward|in (the )?future|every time|each time|"
    r"by default|from here on|remember (that|to)|don'?t ever|do not ever|stop|quit|"
    r"i prefer|i'?d prefer|i would prefer|call me|my name is|i'?m allergic|i am allergic|"
    r"i'?m (a )?(vegetarian|vegan|pescatarian)|i am (a )?(vegetarian|vegan|pescatarian)|"
    r"i (don'?t|do not) eat|i hate|i (don'?t|do not) like)\b", re.I)
REVERSAL_CUES = re.compile(
    r"\b(actually|instead|changed my mind|no longer|not anymore|any ?more|switch(ed)? to|"
    r"now on|rather)\b", re.I)
CORRECTION_CUES = re.compile(
    r"^\s*(no|nope|wrong|incorrect|that'?s (wrong|not right|incorrect)|not quite|"
    r"i told you|i said|i meant|you forgot|again,)\b", re.I)

LEAD_INS = re.compile(
    r"^\s*((no|nope|ok|okay|well|hey|also|and|but|so|again|sorry|actually|please|pls|remember|"
    r"from now on|going forward|in (the )?future|by default|for the record|just|i told you|"
    r"as i said|like i said|i said|that'?s (wrong|not right|incorrect)|not quite|wrong|"
    r"oh|hmm|one more thing|fyi|btw)\b[\s,:;.!-]*)+", re.I)
TRAILERS = re.compile(
    r"[\s,]*\b(please|thanks|thank you|now|from now on|going forward|in (the )?future|"
    r"instead|again|ok|okay|for me|by default|anymore|any more|then|too)\b[\s.!]*$", re.I)

STOP = frozenset(
    "a an and are as at be but by do does for from has have i if in into is it its me my of on or "
    "our so that the their this to was we were with you your please all any just more less".split()
)


@dataclass
class Phrased:
    rule: str  # short imperative sentence
    subject: str  # what it is about (for supersede)
    value: str | None  # the subject's value, when the subject has named values
    positive: bool  # False for never/don't/stop/avoid
    standing: bool  # stated as a standing instruction
    correction: bool  # a correction of an answer


def as_sentence(text: str) -> str:
    text = text.strip().rstrip(".!")
    return text[:1].upper() + text[1:] + "."


def _clean(text: str) -> str:
    text = re.sub(r"\s+", " ", text.strip())
    prev = None
    while prev != text:
        prev = text
        text = LEAD_INS.sub("", text).strip()
        text = TRAILERS.sub("", text).strip()
    return text.strip(" ,;:-")


def _stem(word: str) -> str:
    for suffix in ("ing", "es", "s", "ed", "ly"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    return {_stem(w) for w in re.findall(r"[\w+/-]+", text.lower()) if w not in STOP and len(w) > 1}


def subject_of(text: str) -> tuple[str | None, str | None]:
    words = re.findall(r"[\w+/-]+", text.lower())
    for subject, values in SUBJECTS.items():
        for w in words:
            if w in values:
                return subject, values[w]
    return None, None


def phrase(text: str) -> Phrased | None:
    """One feedback text -> a rule, deterministically. None if nothing general is said."""
    raw = re.sub(r"\s+", " ", text.strip())
    if not raw:
        return None
    standing = bool(STANDING_CUES.search(raw))
    correction = bool(CORRECTION_CUES.search(raw))
    body = _clean(raw)
    low = body.lower()
    positive = True
    rule = None
    subject = None

    if m := re.search(r"\b(?:call me|my name is|i'?m called|i am called)\s+([A-Z][\w'-]*|\w+)", body, re.I):
        name = m.group(1)
        name = name[:1].upper() + name[1:]
        return Phrased(f"Call the user {name}.", "name", name.lower(), True, True, correction)
    if m := re.search(r"\bi(?:'m| am) allergic to ([^.,;!]+)", body, re.I):
        what = m.group(1).strip()
        return Phrased(f"The user is allergic to {what}: never suggest food with {what}.",
                       f"allergy:{_stem(what.lower())}", None, True, True, correction)
    if m := re.search(r"\bi(?:'m| am) (?:a |an )?(vegetarian|vegan|pescatarian)\b", body, re.I):
        diet = m.group(1).lower()
        return Phrased(f"The user is {diet}: suggest only {diet} food.", "diet", diet, True, True,
                       correction)
    if m := re.search(r"\bi (?:don'?t|do not) eat ([^.,;!]+)", body, re.I):
        what = m.group(1).strip()
        return Phrased(f"The user does not eat {what}.", f"food:{_stem(what.lower())}", None, False,
                       True, correction)

    if m := re.match(r"(?:i meant|i mean|i wanted|i asked for)\s+(.+)", body, re.I):
        rule = f"Use {m.group(1)}"
        correction = True
    elif m := re.match(r"(?:i (?:would |'d )?prefer|i like|i want|i'?d like)\s+(.+)", body, re.I):
        rule = f"Prefer {m.group(1)}"
    elif m := re.match(r"(?:i (?:hate|dislike|don'?t like|do not like|can'?t stand))\s+(.+)", body, re.I):
        rule, positive = f"Avoid {m.group(1)}", False
    elif m := re.match(r"(?:always)\s+(.+)", body, re.I):
        rule = f"Always {m.group(1)}"
    elif m := re.match(r"(?:never|don'?t ever|do not ever)\s+(.+)", body, re.I):
        rule, positive = f"Never {m.group(1)}", False
    elif m := re.match(r"(?:stop|quit)\s+(.+)", body, re.I):
        rule, positive = f"Stop {m.group(1)}", False
    elif m := re.match(r"(?:don'?t|do not|no more)\s+(.+)", body, re.I):
        rule, positive = f"Do not {m.group(1)}", False
    elif m := re.match(r"(?:avoid)\s+(.+)", body, re.I):
        rule, positive = f"Avoid {m.group(1)}", False
    elif re.match(r"(?:use|answer|reply|respond|write|keep|be|give|show|include|add|format|"
                  r"explain|talk|speak|put|make|list|start|end|sign|refer|address|mention|"
                  r"cite|spell|measure|convert)\b", low):
        rule = body
    elif m := re.match(r"(?:too|way too|much too)\s+(long|short|verbose|wordy|brief|formal|casual)", low):
        opposite = {"long": "shorter", "verbose": "shorter", "wordy": "shorter", "short": "longer",
                    "brief": "longer", "formal": "more casual", "casual": "more formal"}
        rule = f"Keep answers {opposite[m.group(1)]}"
    if rule is None:
        return None
    rule = as_sentence(rule)
    subject, value = subject_of(rule)
    if subject in POLAR_SUBJECTS:
        value = "yes" if positive else "no"
    if subject is None:
        subject = " ".join(sorted(content_words(rule)))
    return Phrased(rule, subject, value, positive, standing, correction)


def detect(text: str) -> list[tuple[str, str]]:
    """Feedback in a user message: [(kind, sentence)], kind 'preference' or 'correction'.

    Only sentences that say something general about how to answer count:
    ordinary questions and requests about the task at hand are not feedback.
    """
    found = []
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", text.strip()):
        s = sentence.strip()
        if not s or s.endswith("?") or len(s) > 300:
            continue
        standing = STANDING_CUES.search(s)
        correction = CORRECTION_CUES.search(s)
        if not (standing or correction):
            continue
        p = phrase(s)
        if p is None:
            continue
        found.append(("correction" if correction and not standing else "preference", s))
    return found


# --- distillation --------------------------------------------------------------------


def _similar(a: Phrased, rule: dict) -> bool:
    """Same preference in other words: enough shared content words."""
    wa, wb = content_words(a.rule), content_words(rule["text"])
    if not wa or not wb:
        return False
    return len(wa & wb) / min(len(wa), len(wb)) >= 0.6


def learn(store: Store, feedback_id: int, text: str, *, explicit: bool, min_support: int,
          seen_at: str | None = None) -> dict | None:
    """Fold one feedback item into the profile. Returns what happened, or None."""
    p = phrase(text)
    if p is None:
        return None
    seen_at = seen_at or now_iso()
    standing = explicit or p.standing
    live = store.rules(("active", "candidate"))
    rule_value = {}
    for rule in live:
        subject, value = (rule["subject"], None)
        q = phrase(rule["text"])
        if q is not None:
            value = q.value
        rule_value[rule["id"]] = value

    with store.transaction():
        # 1. The same preference again: support grows.
        for rule in live:
            same_subject = rule["subject"] == p.subject
            if same_subject and (p.value is None or rule_value[rule["id"]] in (None, p.value)) \
                    and (p.value is not None or _similar(p, rule)):
                return _support(store, rule, feedback_id, seen_at, standing, min_support)
        for rule in live:
            if _similar(p, rule) and not _contradicts(p, rule, rule_value[rule["id"]]):
                return _support(store, rule, feedback_id, seen_at, standing, min_support)
        # 2. A contradiction on the same subject: the newer word wins, the old rule is kept.
        for rule in live:
            if _contradicts(p, rule, rule_value[rule["id"]]):
                new_id = store.add_rule(p.rule, "active", p.subject, seen_at=seen_at)
                store.link_rule_source(new_id, feedback_id, seen_at)
                store.update_rule(rule["id"], status="superseded", superseded_by=new_id)
                return {"action": "superseded", "rule_id": new_id, "superseded": rule["id"]}
        # 3. Something new.
        status = "active" if standing or min_support <= 1 else "candidate"
        new_id = store.add_rule(p.rule, status, p.subject, seen_at=seen_at)
        store.link_rule_source(new_id, feedback_id, seen_at)
        return {"action": "added", "rule_id": new_id, "status": status}


def _contradicts(p: Phrased, rule: dict, rule_value: str | None) -> bool:
    if rule["subject"] != p.subject:
        return False
    if p.value is not None and rule_value is not None:
        return p.value != rule_value
    # Same free-form subject with opposite polarity ("use X" vs "never use X").
    q = phrase(rule["text"])
    return q is not None and q.positive != p.positive


def _support(store: Store, rule: dict, feedback_id: int, seen_at: str, standing: bool,
             min_support: int) -> dict:
    store.link_rule_source(rule["id"], feedback_id, seen_at)
    support = rule["support"] + 1
    if rule["status"] == "candidate" and (standing or support >= min_support):
        store.update_rule(rule["id"], status="active")
        return {"action": "activated", "rule_id": rule["id"], "support": support}
    return {"action": "supported", "rule_id": rule["id"], "support": support}


def record_feedback(store: Store, text: str, *, source: str, kind: str, min_support: int,
                    message_id: int | None = None, source_message_id: int | None = None,
                    created_at: str | None = None) -> tuple[int, dict | None]:
    """Store a feedback item and fold it into the profile."""
    feedback_id = store.add_feedback(source, kind, text, message_id, source_message_id, created_at)
    outcome = None
    if kind not in ("good",):
        outcome = learn(store, feedback_id, text, explicit=(source == "explicit"),
                        min_support=min_support, seen_at=created_at)
    return feedback_id, outcome


def observe_user_message(store: Store, message_id: int, text: str, about_message_id: int | None,
                         min_support: int, created_at: str | None = None) -> list[dict]:
    """Implicit feedback: what the user's message says about how to answer."""
    outcomes = []
    for kind, sentence in detect(text):
        fid, outcome = record_feedback(
            store, sentence, source="implicit", kind=kind, min_support=min_support,
            message_id=about_message_id if kind == "correction" else None,
            source_message_id=message_id, created_at=created_at)
        outcomes.append({"feedback_id": fid, **(outcome or {})})
    return outcomes


# --- use ---------------------------------------------------------------------------------


def _rank(rule: dict) -> tuple:
    return (not rule["pinned"], -rule["support"], _desc(rule["last_seen"]))


def _desc(ts: str) -> tuple:
    return tuple(-ord(c) for c in ts)


def profile_for_prompt(store: Store, prompt: str, budget_tokens: int) -> tuple[list[dict], list[dict]]:
    """(rules always prepended, rules recalled for this prompt).

    Active rules by pinned, support, recency until the budget is spent; the
    rest of the active rules and the candidates come back only when they share
    words with the prompt.
    """
    from mecli.memory import approx_tokens

    active = sorted(store.rules(("active",)), key=_rank)
    always, overflow, used = [], [], 0
    for rule in active:
        cost = approx_tokens(rule["text"]) + 2
        if used + cost <= budget_tokens or rule["pinned"]:
            always.append(rule)
            used += cost
        else:
            overflow.append(rule)
    words = content_words(prompt)
    relevant = [r for r in overflow + store.rules(("candidate",))
                if words & content_words(r["text"])]
    return always, sorted(relevant, key=_rank)[:5]


def profile_block(always: list[dict], relevant: list[dict]) -> str:
    parts = []
    if always:
        parts.append("The user's standing preferences (follow them):\n"
                     + "\n".join(f"- {r['text']}" for r in always))
    if relevant:
        parts.append("Other preferences the user may have (follow if they apply):\n"
                     + "\n".join(f"- {r['text']}" for r in relevant))
    return "\n\n".join(parts)
