"""Learning benchmark: does `me` learn a simulated user's preferences, and only those?

A scripted user (benchmarks/data/user_*.txt, format in benchmarks/data/README.md) talks to `me`
over many sessions: preferences in varied paraphrases, some recurring, some one-off, some later
reversed, mixed into ordinary chat with traps ("I prefer not to say, but ...", "never mind, ...").
Each session is fed through the real commands, in order, into a fresh ME_HOME:

- the session's messages with `me import FILE` (feedback detection runs on the user's messages),
- explicit corrections with `me feedback TEXT` (about the latest answer),
- probes with `me --dry-run PROMPT`: which rules the model would see at that point.

Then `me profile --json --all` gives the final profile, and we report:

- precision / recall of the active rules against the intended active preferences
  (a duplicate of a rule already matched, a one-off, a reversed preference still active or
  anything unintended counts against precision),
- supersede correctness: each reversed preference is kept as `superseded`, points at the rule that
  replaced it, and that rule is active,
- probe share: for later, unrelated prompts, the share of (prompt, preference) pairs where the
  system message carries the preference (and not the rule it replaced),
- diagnostics (no target): one-offs kept out of the active profile, and message-level detection
  precision / recall (which user messages produced feedback items).

By default the commands run in-process through `mecli.cli.run` (the real argument parsing and
code paths, without a Python start-up per call); `--subprocess` runs `python -m mecli` instead.

    /work/venv/bin/python benchmarks/learning_benchmark.py            # all corpora
    /work/venv/bin/python benchmarks/learning_benchmark.py --verbose  # show misses
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
TARGET = 0.9
LOCOMO = HERE.parent.parent / "shared" / "data" / "locomo" / "locomo10-part1.json"


# --- corpus -----------------------------------------------------------------------------


@dataclass
class Pref:
    id: str
    expect: str  # active | one-off | superseded
    regex: re.Pattern
    successor: str | None = None

    def matches(self, text: str) -> bool:
        return bool(self.regex.search(text))


@dataclass
class Step:
    kind: str  # user | assistant | feedback | probe
    text: str
    tags: list[str] = field(default_factory=list)
    general: bool = False


@dataclass
class Session:
    date: str
    name: str
    steps: list[Step] = field(default_factory=list)


@dataclass
class Corpus:
    name: str
    prefs: dict[str, Pref]
    sessions: list[Session]


STEP = re.compile(r"^(user|assistant|feedback|probe)(\s+--general)?\s*(?:\[([^\]]*)\])?\s*:\s?(.*)$")


def load_corpus(path: Path) -> Corpus:
    prefs: dict[str, Pref] = {}
    sessions: list[Session] = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path.name}:{n}"
        if line.startswith("pref |"):
            _, pid, expect, regex = [p.strip() for p in line.split("|", 3)]
            successor = None
            if expect.startswith("superseded by "):
                expect, successor = "superseded", expect.split()[-1]
            if expect not in ("active", "one-off", "superseded"):
                raise SystemExit(f"{where}: unknown expectation {expect!r}")
            prefs[pid] = Pref(pid, expect, re.compile(regex, re.I), successor)
        elif line.startswith("session |"):
            _, date, name = [p.strip() for p in line.split("|", 2)]
            sessions.append(Session(date, name))
        else:
            m = STEP.match(line)
            if not m or not sessions:
                raise SystemExit(f"{where}: cannot parse {line!r}")
            tags = [t.strip() for t in (m.group(3) or "").split(",") if t.strip() and t.strip() != "-"]
            for t in tags:
                if t not in prefs:
                    raise SystemExit(f"{where}: unknown preference {t!r}")
            text = m.group(4).replace("\\n", "\n")
            sessions[-1].steps.append(Step(m.group(1), text, tags, bool(m.group(2))))
    for p in prefs.values():
        if p.successor and p.successor not in prefs:
            raise SystemExit(f"{path.name}: {p.id} is superseded by unknown {p.successor}")
    return Corpus(path.stem, prefs, sessions)


# --- running `me` ---------------------------------------------------------------------------


class Me:
    """Runs `me` commands against one ME_HOME, in-process or as a subprocess."""

    def __init__(self, home: Path, subprocess_mode: bool):
        self.home = home
        self.subprocess_mode = subprocess_mode
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ME_")}
        self.env.update({"ME_HOME": str(home), "NO_COLOR": "1", "ME_EMBEDDING_MODEL": "none",
                         "ME_OFFLINE": "1"})
        self.calls = 0

    def __call__(self, *args: str) -> str:
        self.calls += 1
        if self.subprocess_mode:
            proc = subprocess.run([sys.executable, "-m", "mecli", *args], capture_output=True,
                                  text=True, env=self.env, stdin=subprocess.DEVNULL, timeout=300)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        else:
            from mecli.cli import run
            from mecli.environment import Environment

            stdout, stderr = io.StringIO(), io.StringIO()
            saved = dict(os.environ)
            os.environ.clear()
            os.environ.update(self.env)
            try:
                code = run(list(args), Environment(stdin=io.StringIO(""), stdout=stdout,
                                                   stderr=stderr, environ=self.env))
            finally:
                os.environ.clear()
                os.environ.update(saved)
            out, err = stdout.getvalue(), stderr.getvalue()
        if code != 0:
            raise RuntimeError(f"me {' '.join(args)[:80]} exited {code}: {err.strip()}")
        return out


def rule_lines(system: str) -> list[str]:
    return [line[2:].strip() for line in system.splitlines() if line.startswith("- ")]


# --- one corpus --------------------------------------------------------------------------------


@dataclass
class ProbeResult:
    prompt: str
    pref: str
    ok: bool
    why: str = ""


def run_corpus(corpus: Corpus, subprocess_mode: bool, budget: int | None, tight: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="me-learning-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        config = home / "config.toml"
        if budget is not None:
            config.write_text(f"profile_tokens = {int(budget)}\n")
        me = Me(home, subprocess_mode)
        started = time.perf_counter()
        pending: list[dict] = []
        tags_by_message: dict[tuple[str, str], list[str]] = {}
        explicit_tags: list[tuple[str, list[str]]] = []
        probes: list[ProbeResult] = []
        tight_probes: list[ProbeResult] = []

        def flush():
            if not pending:
                return
            path = Path(tmp) / "chunk.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in pending), encoding="utf-8")
            me("import", str(path), "--json")
            pending.clear()

        for s_index, session in enumerate(corpus.sessions):
            conv = f"{corpus.name}:{s_index:02d}:{session.name}"
            for m_index, step in enumerate(session.steps):
                ts = f"{session.date}T{9 + m_index // 6:02d}:{(m_index * 7) % 60:02d}:00Z"
                if step.kind in ("user", "assistant"):
                    mid = f"s{s_index:02d}m{m_index:02d}"
                    pending.append({"conversation": conv, "role": step.kind, "content": step.text,
                                    "created_at": ts, "id": mid})
                    if step.kind == "user":
                        tags_by_message[(conv, mid)] = (step.tags, step.text)
                    continue
                flush()
                if step.kind == "feedback":
                    args = ["feedback", "--json"] + (["--general"] if step.general else [])
                    me(*args, "--", step.text)
                    explicit_tags.append((step.text, step.tags))
                else:
                    doc = json.loads(me("--dry-run", "--", step.text))
                    lines = rule_lines(doc["messages"][0]["content"])
                    for pid in step.tags:
                        probes.append(check_probe(corpus, step.text, pid, lines))
                    # The same prompt with a tight profile budget: relevance has to bring rules back.
                    saved = config.read_text() if config.exists() else None
                    config.write_text(f"profile_tokens = {int(tight)}\n")
                    doc = json.loads(me("--dry-run", "--", step.text))
                    config.write_text(saved) if saved is not None else config.unlink()
                    lines = rule_lines(doc["messages"][0]["content"])
                    for pid in step.tags:
                        tight_probes.append(check_probe(corpus, step.text, pid, lines))
            flush()
        profile = json.loads(me("profile", "--json", "--all"))["rules"]
        export = [json.loads(line) for line in me("export").splitlines() if line.strip()]
        elapsed = time.perf_counter() - started
        result = score(corpus, profile, probes, export, tags_by_message)
        result["probe_share_tight"] = (sum(p.ok for p in tight_probes) / len(tight_probes)
                                       if tight_probes else 1.0)
        result["misses"]["probes_tight"] = [f"{p.pref} in {p.prompt!r}: {p.why}"
                                            for p in tight_probes if not p.ok]
        return result | {"seconds": elapsed, "calls": me.calls, "profile": profile}


def run_ordinary(path: Path, subprocess_mode: bool) -> dict:
    """False positives: every turn of LoCoMo's human-human chats imported as the user's. None of it
    is an instruction to an assistant; a few turns state real facts (allergies) that a personal
    assistant may fairly keep. Reports the rules learned, per 1,000 turns."""
    data = json.loads(path.read_text(encoding="utf-8"))
    records = []
    for rec in data:
        conv = rec["conversation"]
        for key, turns in conv.items():
            if key.startswith("session_") and isinstance(turns, list):
                for t in turns:
                    records.append({"conversation": f"{rec['sample_id']}:{key}", "role": "user",
                                    "content": t["text"], "id": t["dia_id"]})
    with tempfile.TemporaryDirectory(prefix="me-learning-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        me = Me(home, subprocess_mode)
        f = Path(tmp) / "ordinary.jsonl"
        f.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        me("import", str(f), "--json")
        rules = json.loads(me("profile", "--json", "--all"))["rules"]
    active = [r for r in rules if r["status"] == "active"]
    return {"turns": len(records), "active": len(active), "candidates": len(rules) - len(active),
            "rules": [f"{r['status']}: {r['text']}" for r in rules]}


def check_probe(corpus: Corpus, prompt: str, pid: str, lines: list[str]) -> ProbeResult:
    pref = corpus.prefs[pid]
    if not any(pref.matches(line) for line in lines):
        return ProbeResult(prompt, pid, False, "missing")
    for old in corpus.prefs.values():
        if old.successor == pid and any(old.matches(line) and not pref.matches(line) for line in lines):
            return ProbeResult(prompt, pid, False, f"still carries {old.id}")
    return ProbeResult(prompt, pid, True)


# --- scoring -----------------------------------------------------------------------------------


def score(corpus: Corpus, rules: list[dict], probes: list[ProbeResult], export: list[dict],
          tags_by_message: dict) -> dict:
    prefs = corpus.prefs
    intended = [p for p in prefs.values() if p.expect == "active"]
    active = [r for r in rules if r["status"] == "active"]

    claimed: dict[str, int] = {}
    false_positives = []
    for rule in active:
        hits = [p for p in intended if p.matches(rule["text"])]
        free = [p for p in hits if p.id not in claimed]
        if free:
            claimed[free[0].id] = rule["id"]
        else:
            other = [p.id for p in prefs.values() if p.matches(rule["text"])]
            why = ("duplicate of " + hits[0].id) if hits else (
                ("should not be active: " + ", ".join(other)) if other else "unintended")
            false_positives.append((rule, why))
    precision = (len(active) - len(false_positives)) / len(active) if active else 0.0
    recall = len(claimed) / len(intended) if intended else 1.0
    missed = [p.id for p in intended if p.id not in claimed]

    by_id = {r["id"]: r for r in rules}
    supersedes, supersede_misses = [], []
    for p in prefs.values():
        if p.expect != "superseded":
            continue
        new = prefs[p.successor]
        old_rules = [r for r in rules if p.matches(r["text"]) and not new.matches(r["text"])]
        ok = bool(old_rules) and all(r["status"] == "superseded" for r in old_rules) and any(
            r["superseded_by"] in by_id and by_id[r["superseded_by"]]["status"] == "active"
            and new.matches(by_id[r["superseded_by"]]["text"]) for r in old_rules)
        supersedes.append(ok)
        if not ok:
            supersede_misses.append(
                f"{p.id} -> {p.successor}: " + ("; ".join(
                    f"rule {r['id']} {r['status']} (by {r['superseded_by']}): {r['text']}"
                    for r in old_rules) or "no rule for the old preference"))

    one_offs = [p for p in prefs.values() if p.expect == "one-off"]
    one_off_ok = [p for p in one_offs if not any(p.matches(r["text"]) and r["status"] == "active"
                                                 and not any(q.matches(r["text"]) for q in intended)
                                                 for r in rules)]

    # Message-level detection: which user messages produced implicit feedback items.
    detected = set()
    for rec in export:
        if rec.get("type") == "feedback" and rec.get("source") == "implicit" and rec.get("source_message"):
            detected.add(tuple(rec["source_message"]))
    tagged = {k for k, (tags, _) in tags_by_message.items() if tags}
    det_tp = len(detected & tagged)
    det_precision = det_tp / len(detected) if detected else 0.0
    det_recall = det_tp / len(tagged) if tagged else 1.0
    spurious_messages = sorted(detected - tagged)
    missed_messages = sorted(tagged - detected)

    return {
        "precision": precision, "recall": recall,
        "supersede": sum(supersedes) / len(supersedes) if supersedes else 1.0,
        "probe_share": sum(p.ok for p in probes) / len(probes) if probes else 1.0,
        "one_offs_kept_out": len(one_off_ok) / len(one_offs) if one_offs else 1.0,
        "detection_precision": det_precision, "detection_recall": det_recall,
        "counts": {"sessions": len(corpus.sessions), "preferences": len(intended),
                   "active_rules": len(active), "rules": len(rules), "probes": len(probes),
                   "reversals": len(supersedes), "one_offs": len(one_offs)},
        "misses": {
            "false_positive_rules": [f"rule {r['id']}: {r['text']} ({why})" for r, why in false_positives],
            "missed_preferences": missed,
            "supersede": supersede_misses,
            "probes": [f"{p.pref} in {p.prompt!r}: {p.why}" for p in probes if not p.ok],
            "one_offs_active": [p.id for p in one_offs if p not in one_off_ok],
            "spurious_detections": [tags_by_message[m][1] for m in spurious_messages
                                    if m in tags_by_message],
            "missed_detections": [tags_by_message[m][1] for m in missed_messages],
        },
    }


# --- report --------------------------------------------------------------------------------------


ROWS = [
    ("precision", "Active-rule precision", True),
    ("recall", "Active-rule recall", True),
    ("supersede", "Supersede correctness", True),
    ("probe_share", "Probes carrying the preference", True),
    ("probe_share_tight", "Probes carrying it, tight budget", False),
    ("one_offs_kept_out", "One-offs kept out of the profile", False),
    ("detection_precision", "Detection precision (messages)", False),
    ("detection_recall", "Detection recall (messages)", False),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpora", nargs="*", type=Path,
                    help="corpus files (default: every benchmarks/data/user_*.txt)")
    ap.add_argument("--subprocess", action="store_true", help="run `python -m mecli` per command")
    ap.add_argument("--budget", type=int, default=None, help="profile_tokens for the run")
    ap.add_argument("--tight", type=int, default=120,
                    help="profile_tokens for the tight-budget probes (default 120)")
    ap.add_argument("--ordinary", type=Path, default=LOCOMO,
                    help="LoCoMo JSON for the false-positive check (skipped when absent)")
    ap.add_argument("--verbose", "-v", action="store_true", help="list every miss")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)

    paths = args.corpora or sorted(DATA.glob("user_*.txt"))
    results = {}
    for path in paths:
        corpus = load_corpus(path)
        results[corpus.name] = run_corpus(corpus, args.subprocess, args.budget, args.tight)
    ordinary = run_ordinary(args.ordinary, args.subprocess) if args.ordinary and args.ordinary.exists() \
        else None

    if args.json:
        print(json.dumps({"corpora": results, "ordinary": ordinary}, indent=2, default=str))
        return 0

    names = list(results)
    cmd = "python benchmarks/learning_benchmark.py " + " ".join(
        a for a in (sys.argv[1:] if argv is None else argv))
    print(f"`{cmd.strip()}`  (mode: {'subprocess' if args.subprocess else 'in-process'}; "
          f"profile_tokens: {args.budget or 'default'})\n")
    print("| metric | " + " | ".join(names) + " | target |")
    print("|---|" + "---|" * len(names) + "---|")
    for key, label, targeted in ROWS:
        cells = [f"{results[n][key]:.2f}" for n in names]
        print(f"| {label} | " + " | ".join(cells) + f" | {'>= 0.90' if targeted else '-'} |")
    for key in ("sessions", "preferences", "reversals", "one_offs", "probes", "active_rules", "rules"):
        print(f"| {key.replace('_', ' ')} | " + " | ".join(str(results[n]["counts"][key]) for n in names)
              + " | |")
    print("| seconds | " + " | ".join(f"{results[n]['seconds']:.1f}" for n in names) + " | |")
    if ordinary:
        print(f"\nOrdinary chat (false positives): {ordinary['turns']:,} LoCoMo turns imported as the "
              f"user's -> {ordinary['active']} active rules, {ordinary['candidates']} candidates "
              f"({1000 * (ordinary['active'] + ordinary['candidates']) / ordinary['turns']:.1f} "
              f"per 1,000 turns).")
        if args.verbose:
            for r in ordinary["rules"]:
                print(f"  - {r}")

    for n in names:
        misses = {k: v for k, v in results[n]["misses"].items() if v}
        if not misses:
            continue
        print(f"\n{n} misses:" if args.verbose else f"\n{n}: {sum(map(len, misses.values()))} misses "
              "(--verbose lists them)")
        if args.verbose:
            for k, v in misses.items():
                print(f"  {k}:")
                for item in v:
                    print(f"    - {item}")
            print("  final active rules:")
            for r in results[n]["profile"]:
                if r["status"] == "active":
                    print(f"    {r['id']:>3} s={r['support']} {r['text']}")
    ok = all(results[n][k] >= TARGET for n in names for k, _, t in ROWS if t)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
