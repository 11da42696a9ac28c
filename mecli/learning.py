"""Learning from feedback: detect it, distil it into profile rules, use them.

Everything here is deterministic (a subject lexicon, sentence patterns and word
overlap), so it works the same on a 135M model as on a large one: no JSON, no
tool calls, nothing the model has to get right.

- analyze() reads one sentence: the preferences it states, each as a Phrased
  item: a short imperative rule, a key ("units=metric", "emoji=no",
  "free:+:delve word"), whether it is a standing instruction, a correction,
  or a one-off ("this time", "here").
- detect() splits a user message into sentences and keeps what analyze()
  finds; ordinary questions and requests about the task at hand are not
  feedback ("I prefer not to say, but ...", "never mind, how do I ...").
- learn() folds a feedback item into the profile: the same key again adds
  support (a candidate becomes active at `rule_min_support`, or at once when
  stated as a standing instruction); a standing item with another value on the
  same subject supersedes the old rule (kept, marked superseded); a one-off
  that contradicts an active rule only starts a candidate.
- profile_for_prompt(): active rules by pinned, support, recency within a token
  budget; the rest and the candidates when relevant to the prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mecli.db import Store, now_iso

# --- the subject lexicon -------------------------------------------------------------------
#
# A subject is something a preference can be about. Its values are mutually
# exclusive: two rules on one subject with different values contradict each
# other, and the newer standing one wins. A polar subject has the values
# "yes" and "no" ("never use emojis" / "emojis are fine"), from the polarity
# of the sentence. `topics` are words in a prompt that make the rule relevant.


@dataclass(frozen=True)
class Value:
    name: str
    rule: str
    pattern: re.Pattern | None = None


@dataclass(frozen=True)
class Subject:
    name: str
    values: tuple[Value, ...]
    mention: re.Pattern | None = None  # polar subjects: what mentions the subject
    context: re.Pattern | None = None  # the sentence must also match this
    topics: frozenset[str] = frozenset()

    @property
    def polar(self) -> bool:
        return self.mention is not None

    def value(self, name: str) -> Value | None:
        return next((v for v in self.values if v.name == name), None)


def _re(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.I)


def _topics(words: str) -> frozenset[str]:
    return frozenset(words.split())


_CODE_TOPICS = _topics("code function script program class method bug error implement write snippet "
                       "compile library api parse regex loop test refactor")
_FOOD_TOPICS = _topics("food eat cook cooking recipe recipes dinner lunch breakfast snack snacks meal "
                       "meals restaurant menu dish dishes bake baking ingredients grocery")

# "too long" about an answer ("that's way too long", "your answers are too short"), not about life.
_TOO = (r"(?:^\W*|\b(?:it|that|this|answers?|responses?|replies|explanations?|they|yours|"
        r"answer|response|reply|explanation)\s*(?:'s|is|was|are|were)?\s+)(?:a bit |way |much |far |"
        r"still |a little )?too ")

SUBJECTS: tuple[Subject, ...] = (
    Subject("units", (
        Value("metric", "Use metric units (Celsius, kilometres, kilograms).",
              _re(r"\bmetric\b|\bcelsius\b|\bcentigrade\b|°c\b|\bkilomet\w*|\bkms?\b|\bkgs?\b|"
                  r"\bkilo(gram)?s?\b|\bcentimet\w*|\bmillimet\w*|\blit(er|re)s?\b|\bgrams?\b")),
        Value("imperial", "Use imperial units (Fahrenheit, miles, pounds).",
              _re(r"\bimperial\b|\bfahrenheit\b|°f\b|\bmiles?\b|\bmph\b|\blbs?\b|\bpounds\b(?! sterling)|"
                  r"\bfeet\b|\bfoot\b|\binch(es)?\b|\bounces?\b|\boz\b|\bgallons?\b|\byards?\b")),
    ), topics=_topics("weather temperature warm cold hot degrees distance far drive driving run running "
                      "walk hike weigh weight heavy height tall speed fast recipe cook bake travel "
                      "trip miles km")),
    Subject("length", (
        Value("short", "Keep answers short and to the point.",
              _re(r"\b(short|brief)(er)?\s+(and\s+\w+\s+)?(answers?|responses?|replies|reply|"
                  r"explanations?|messages?|output)\b|\b(keep|make)\s+(it|them|((your|the|all)\s+)?(answers?|"
                  r"responses?|replies)|things|everything|this)\s+(short|brief)\b|\bbe\s+(more\s+)?(brief|concise)\b|"
                  r"\bshorter\b|\bbriefer\b|\bconcise\b|\bterse\b|\bsuccinct\b|"
                  r"\b(get|be|keep it|stay|straight|short and|right) to the point\b(?!\s+(where|that|of|when))|"
                  r"\bless wordy\b|\bfewer words\b|" + _TOO + r"(long|wordy|verbose)\b|\btoo wordy\b|"
                  r"\btoo verbose\b|\bwall of text\b")),
        Value("long", "Give detailed, in-depth answers.",
              _re(r"\b(long|longer)\s+(answers?|responses?|replies|explanations?)\b|\blonger\b|"
                  r"\bmore (detail|details|depth)\b|\bmore detailed\b|\bin[- ]depth\b|\bthorough\b|"
                  r"\bdetailed\b|\belaborate\b|" + _TOO + r"(short|brief|terse)\b")),
    )),
    Subject("language", tuple(
        Value(lang, f"Answer in {lang.capitalize()}.",
              _re(rf"\b(in|to|into)\s+{lang}\b|\b{lang}\s+(answers?|replies|responses|only|please)\b|"
                  rf"\b(answer|reply|respond|speak|write|talk)\s+(back\s+)?(in\s+)?{lang}\b"))
        for lang in ("english", "french", "spanish", "german", "italian", "portuguese", "dutch",
                     "japanese", "chinese", "russian", "polish", "swedish", "hindi", "arabic"))),
    Subject("tone", (
        Value("casual", "Use a casual, friendly tone.",
              _re(r"\bcasual\b|\binformal\b|\brelaxed\b|\bless formal\b|\bnot so formal\b|\bchill\b|"
                  r"\bless stiff\b")),
        Value("formal", "Keep a formal, professional tone.",
              _re(r"\b(?<!less )formal\b|\bprofessional\b|\bmore polite\b")),
    ), context=_re(r"\b(tone|be|sound|sounds|talk|speak|write|writing|style|with me|keep it|register|"
                   r"answers?|replies|responses?|formal)\b")),
    Subject("format", (
        Value("bullets", "Use bullet points rather than long paragraphs.",
              _re(r"\bbullet\w*(\s+(points?|lists?))?\b")),
        Value("numbered", "Number the steps.",
              _re(r"\bnumbered\b|\bnumber (the|your|each|all) (steps?|items?|points?|lists?)\b")),
        Value("table", "Use tables for comparisons.", _re(r"\btables?\b")),
        Value("prose", "Answer in prose paragraphs, not lists.",
              _re(r"\bprose\b|\bparagraphs\b|\bfull sentences\b")),
    ), context=_re(r"\b(answers?|use|prefer|like|want|meant|please|instead|rather|over|not|no|"
                   r"steps?|format|lists?|summar\w+|comparisons?|points?)\b")),
    Subject("markup", (
        Value("markdown", "Format answers with markdown.", _re(r"\bmarkdown\b")),
        Value("plain", "Use plain text, no markdown.", _re(r"\bplain[- ]?text\b|\bplain\b")),
    )),
    Subject("indentation", (
        Value("spaces", "Indent code with spaces.", _re(r"\b(\d+\s+)?spaces\b")),
        Value("tabs", "Indent code with tabs.", _re(r"\btabs\b")),
    ), context=_re(r"\bindent\w*|\bcode\b|\bformat\w*|\b(use|with|prefer)\s+(\d+\s+)?(tabs|spaces)\b|"
                   r"\btabs\b.*\bspaces\b|\bspaces\b.*\btabs\b|\bswitched to tabs\b"),
        topics=_CODE_TOPICS),
    Subject("code_language", tuple(
        Value(name, f"Write code examples in {label}.", _re(pattern)) for name, label, pattern in (
            ("python", "Python", r"\bpython\b"),
            ("javascript", "JavaScript", r"\bjavascript\b|\bjs\b|\bnode\.?js\b"),
            ("typescript", "TypeScript", r"\btypescript\b"),
            ("rust", "Rust", r"\brust\b"),
            ("go", "Go", r"\bgolang\b|\bin go\b"),
            ("java", "Java", r"\bjava\b"),
            ("csharp", "C#", r"\bc#"),
            ("cpp", "C++", r"\bc\+\+"),
            ("ruby", "Ruby", r"\bruby\b"),
            ("php", "PHP", r"\bphp\b"),
            ("kotlin", "Kotlin", r"\bkotlin\b"),
            ("swift", "Swift", r"\bswift\b"),
        )), topics=_CODE_TOPICS),
    Subject("os", (
        Value("linux", "The user is on Linux: give Linux commands.",
              _re(r"\blinux\b|\bubuntu\b|\bdebian\b|\bfedora\b|\bcentos\b|\bmint\b")),
        Value("macos", "The user is on macOS: give macOS commands.",
              _re(r"\bmac ?os\b|\bos ?x\b|\bmac\b|\bmacbook\b")),
        Value("windows", "The user is on Windows: give Windows commands.", _re(r"\bwindows\b")),
    ), topics=_topics("command commands install terminal shell file files disk process port network "
                      "package folder directory permission service")),
    Subject("date_format", (
        Value("iso", "Write dates as YYYY-MM-DD (ISO 8601).",
              _re(r"\biso[- ]?8601\b|\biso (dates?|format|style)\b|\byyyy-mm-dd\b|\byear-month-day\b")),
        Value("dmy", "Write dates as DD/MM/YYYY.",
              _re(r"\bdd[/.-]mm([/.-]yyyy)?\b|\bday[/-]month[/-]year\b|\b(european|uk|british) dates?\b|"
                  r"\bday first\b|\bday before (the )?month\b")),
        Value("mdy", "Write dates as MM/DD/YYYY.",
              _re(r"\bmm[/.-]dd([/.-]yyyy)?\b|\bmonth[/-]day[/-]year\b|\b(us|american) dates?\b|"
                  r"\bmonth first\b")),
    ), topics=_topics("date dates when day schedule calendar deadline plan trip released release "
                      "born year month")),
    Subject("clock", (
        Value("24h", "Write times in 24-hour format (e.g. 21:00).",
              _re(r"\b24[- ]?(hour|hr|h)\b|\bmilitary time\b")),
        Value("12h", "Write times in 12-hour format with am/pm.",
              _re(r"\b12[- ]?(hour|hr|h)\b|\bam/pm\b|\ba\.m\./p\.m\.")),
    ), topics=_topics("time when schedule meeting leave arrive open opens close train flight bus "
                      "appointment clock hour hours noon")),
    Subject("currency", tuple(
        Value(name, f"Give prices in {label}.", _re(pattern)) for name, label, pattern in (
            ("eur", "euros (EUR)", r"\beuros?\b|\beur\b|€"),
            ("usd", "US dollars (USD)", r"\b(us )?dollars?\b|\busd\b"),
            ("gbp", "pounds sterling (GBP)", r"\bpounds sterling\b|\bgbp\b|£|\bbritish pounds\b"),
            ("jpy", "yen (JPY)", r"\byen\b|\bjpy\b"),
            ("inr", "rupees (INR)", r"\brupees?\b|\binr\b"),
            ("chf", "Swiss francs (CHF)", r"\bswiss francs?\b|\bchf\b"),
        )), topics=_topics("price prices cost costs budget buy cheap expensive worth money pay salary "
                           "rent fee spend")),
    Subject("level", (
        Value("simple", "Explain simply and avoid jargon.",
              _re(r"\bsimple (words|language|terms|english|explanations?|answers?)\b|\bsimpler\b|"
                  r"\bplain (english|language)\b|\blike i'?m (5|five|a child|a kid|twelve)\b|\beli5\b|"
                  r"\bfor (a )?beginners?\b|\bnon-?technical\b|\bkeep it simple\b|\blayman'?s terms\b")),
        Value("expert", "Use precise technical language; skip the basics.",
              _re(r"\bjargon\b|\btechnical (details?|depth|terms|language)\b|\bexpert level\b|"
                  r"\bdumb(ed)? (it )?down\b|\bskip the basics\b")),
    )),
    Subject("spelling", (
        Value("british", "Use British spelling (colour, organise).",
              _re(r"\b(british|uk) (spelling|english)\b|\ben[-_]gb\b|\bcolour\b|\bfavourite\b|"
                  r"\borganis(e|ed|ing)\b|\bcentre\b|\bharbour\b|\brealis(e|ed)\b")),
        Value("american", "Use American spelling (color, organize).",
              _re(r"\b(american|us) (spelling|english)\b|\ben[-_]us\b|\bcolor\b|\bfavorite\b|"
                  r"\borganiz(e|ed|ing)\b|\bcenter\b|\bharbor\b|\brealiz(e|ed)\b")),
    ), context=_re(r"\bspell\w*|\b(british|american|uk|us) english\b|\bnot (colou?r|favou?rite|"
                   r"organi[sz]e|cent(re|er)|harbou?r)\b")),
    # Polar subjects: yes / no.
    Subject("examples", (Value("yes", "Include an example when explaining something."),
                         Value("no", "Skip examples unless asked.")),
            mention=_re(r"(?<!code )(?<!python )\bexamples?\b(?!\s+(of|in|for)\b)")),
    Subject("emoji", (Value("yes", "Emojis are fine to use."), Value("no", "Never use emojis.")),
            mention=_re(r"\bemojis?\b|\bemoticons?\b|\bsmileys?\b")),
    Subject("apology", (Value("yes", "Apologizing is fine."),
                        Value("no", "Don't apologize; just answer.")),
            mention=_re(r"\bapologi[sz]\w*|\bapolog(y|ies)\b|\bsorry\b")),
    Subject("disclaimers", (Value("yes", "Add disclaimers where relevant."),
                            Value("no", "Skip disclaimers and caveats.")),
            mention=_re(r"\bdisclaimers?\b|\bcaveats?\b|\bsafety warnings?\b")),
    Subject("sources", (Value("yes", "Cite sources for factual claims."),
                        Value("no", "Don't list sources.")),
            mention=_re(r"\b(?<!open )(?<!open-)sources?\b(?! code| file)|\bcitations?\b|\bcite\b|"
                        r"\breferences\b|\bwhere (the )?info(rmation)? (comes?|came) from\b")),
    Subject("type_hints", (Value("yes", "Include type hints in Python code."),
                           Value("no", "Leave out type hints in Python code.")),
            mention=_re(r"\btype[- ](hints?|annotations?)\b|\btype-annotated\b"),
            topics=_CODE_TOPICS),
    Subject("restate", (Value("yes", "Restate the user's question before answering."),
                        Value("no", "Don't restate the user's question; just answer.")),
            mention=_re(r"\b(repeat|restat|rephras|echo|paraphras)\w*\b[^.!?]{0,30}?"
                        r"\b(questions?|what i (asked|said|wrote)|my (words|prompt|request))\b")),
    Subject("moralizing", (Value("yes", "Mention health and safety considerations."),
                           Value("no", "Don't moralize or lecture; just give the facts.")),
            mention=_re(r"\blectur\w*|\bsermons?\b|\bmorali[sz]\w*|\bpreach\w*|\bjudgmental\b|"
                        r"\bnanny\w*|\bpatroni[sz]\w*")),
    Subject("summary", (Value("yes", "End answers with a one-line summary."),
                        Value("no", "Don't add a summary at the end.")),
            mention=_re(r"\bsummary\b|\bsummaries\b|\brecap\b|\btl;?dr\b|\bsum (it )?up\b"),
            context=_re(r"\b(end|ending|ended|finish|finished|close|conclude|bottom|last line|one-line|"
                        r"tl;?dr|at the end|always|every|each|again|forgot|missing|never|no more|stop)\w*")),
)
SUBJECT_BY_NAME = {s.name: s for s in SUBJECTS}

# --- cues --------------------------------------------------------------------------------------

STANDING = _re(
    r"\b(always|never|from now on|going forward|in (the )?future|every ?time|each time|by default|"
    r"from here on|any ?more|in general|all the time|whenever|every (answer|response|reply|message|"
    r"explanation|single|day)|don'?t ever|do not ever|no more|"
    r"ever again|in (anything|everything|all)\b|for (all|every|any)\b|"
    r"i(?: would|'d)? prefer|i'?d rather|i would rather|i (really )?like|i love|i'?d like|i hate|"
    r"i (really )?(dislike|can'?t stand|don'?t like|do not like)|"
    r"i would like|i want(?! to)|i need(?! to)|it (would )?helps? if|"
    r"remember|i told you|like i (asked|said)|as i (said|asked|mentioned)|i already (said|asked)|"
    r"again)\b")
# A lasting reason ("I read them in a small terminal", "I'm used to am/pm").
HABITUAL = _re(
    r"\bi(?:'m| am) (?:used to|on|in|a|an|usually|always|often|mostly|generally)\b|"
    r"\bi (?:use|code|program|write|read|paste|live|work|copy|find|run|always|usually|mostly|only)\b|"
    r"\bi (?:think|measure|count|cook|bake) in\b|"
    r"\b(work|works|is|are) better for me\b")
REVERSAL = _re(
    r"\b(actually|changed my mind|switch(ed)? (back )?to|(go(ing)? )?back to|let'?s switch|"
    r"now on|no longer|from today|these days|nowadays|instead|(are|is) (fine|ok|okay) now)\b")
CORRECTION = _re(
    r"^\W*(no|nope|wrong|incorrect|not quite|again|that'?s (wrong|not right|incorrect|not what))\b|"
    r"\b(i told you|i meant|you forgot|forgot|missing|not what i asked|too (long|short|wordy|verbose|"
    r"brief|formal|casual))\b")
ONE_OFF = _re(
    r"\b(this time|this one|for this (one|email|answer|question|message|case|task|time|reply|"
    r"script|post|letter|text)|for now|just this|in this case|right now|for today)\b|"
    r"\bhere\b(?!')")
EXCLUDE = _re(
    r"\b(prefer not|'d rather not|would rather not|rather not)\s+(to\s+)?(say|share|tell|answer|"
    r"disclose|discuss|talk|get into|go into)\b|\bnever ?mind\b|\bi meant to\b|"
    r"\bno (worries|problem|thanks|idea|way)\b|"
    r"\bi meant (what|how|why|when|where|who|which|is|are|do|does|can)\b")
# A clause with one of these says how to answer (not only what happened).
DIRECTIVE = _re(
    r"^(please |pls |just |and |also |so |then |but |actually |now |ok |okay |oh |again |"
    r"haha |hey )*(use|keep|be|give|write|answer|reply|respond|put|format|include|add|skip|drop|"
    r"stop|quit|avoid|switch|stick|go|number|indent|cite|mention|end|finish|start|begin|list|"
    r"show|make|say|call|address|spell|convert|round|translate|speak|talk|lose|cut|remove|"
    r"leave|lay off)\b|"
    r"\b(please|pls|should|must|always|never|from now on|going forward|prefer|i'?d rather|"
    r"i would rather|i (really )?like|i love|i'?d like|i would like|i want|i need|you can|you may|"
    r"feel free|no need|don'?t need|do not need|don'?t have to|let'?s|let us|i meant|i told you|"
    r"remember|like i (asked|said)|as i (said|asked|mentioned)|you forgot|forgot|missing|again|"
    r"instead|rather than|not|no|too|(is|are) (fine|ok|okay|allowed|welcome)|it (would )?helps? if|"
    r"would be (nice|better|great)|i find|i'?m used to|i use|i'?m on|i am on|i code|i write|"
    r"i program|i work|i'?m in|enough with|again with|don'?t|do not|works? better|(is|are) better|"
    r"(has|have|needs?) to be|must be|i think in|changed my mind|i hate|i dislike|can'?t stand|"
    r"i love)\b")
NEGATORS = _re(
    r"\b(not|no|never|don'?t|do not|doesn'?t|without|avoid|stop|quit|skip|drop|less|fewer|"
    r"instead of|rather than|hate|dislike|no need (to|for)|no more|enough with|again with|"
    r"too many|so many|all these|all those|too|lay off|cut out|lose the|get rid of|"
    r"changed my mind about|tired of|sick of|fed up with|had enough of)\b")
AFTER_NEGATIVE = _re(
    r"^\W*(\w+\W+){0,3}?(is|are|look|looks|seem|seems)\s+(so\s+|really\s+|too\s+)?(annoying|confusing|"
    r"distracting|unprofessional|unnecessary|useless|robotic|childish|too much|not needed)\b|"
    r"\b(drop|remove|lose|cut|skip|ditch) (them|it|those|these)\b")
NEGATIVE_SENTIMENT = _re(
    r"\b(confusing|annoying|unprofessional|distracting|hard to read|robotic|i hate|can'?t stand)\b")
ABSENCE = _re(
    r"\b(forgot|forgotten|missing|left out|leave out|without any|no \w+( \w+)? again|"
    r"didn'?t (include|add|give|mention|use|cite))\b")
PERMISSION = _re(
    r"\b(are|is)\s+(totally |perfectly |now |also )?(fine|ok|okay|allowed|welcome|good)\b|"
    r"\bfeel free\b|\byou (can|may) (use|add|include|have)\b|\bgo ahead\b")
QUESTION_CLAUSE = _re(
    r"^(what|how|why|when|where|who|which|whose)('s|\s+(\w+\s+)?(is|are|was|were|do|does|did|can|"
    r"could|would|will|should|shall|may|might|have|has|had)\b)|"
    r"^(do|does|did|can|could|would|will|should|shall|is|are|was|were|have|has|had|may|might|am)\s+"
    r"(you|i|we|they|he|she|it|there|this|that|these|those|my|your|the|a|an|people|someone|"
    r"anyone|student|any)\b|^(any|anything)\s+(ideas?|tips?|suggestions?|advice|else)\b")
MONEY = _re(r"\b(uk|britain|british|england|scotland|wales|sterling|prices?|costs?|money|budget|"
            r"shop|shopping|spend|spending|pay|paid|cheap|expensive|salary|rent|£)\b|£")
# "convert 5 miles to km", "translate this into French": a task, not a preference.
TASK = _re(r"\b(convert\w*|conversion|how many|how much|translate this|translate it|translation of)\b")
POLITE_REQUEST = _re(r"^(can|could|would|will)\s+you\s+(please\s+)?(?=(stop|always|never|not|use|keep|"
                     r"avoid|skip|quit|be|write|answer|reply|give|include|add|drop)\b)")
TAG_QUESTION = _re(r"[,\s]+(remember|right|ok|okay|yeah|got it)\s*\?+\s*$")
CLAUSE_LEAD = _re(r"^(and|but|so|also|then|ok|okay|well|hmm|oh|actually|now|please|haha|btw|plus)\b[\s,]*")

# Imperative behaviour verbs and nouns for what an assistant produces: free-form
# rules must be about answering, not about the user's task ("Always Be Closing").
BEHAVIOUR_VERBS = frozenset(
    "use say write answer reply respond include add give show put keep start begin end finish mention "
    "explain ask call format list number cite suggest recommend assume repeat restate apologize "
    "apologise be make sign refer address spell convert round translate summarize summarise offer "
    "provide tell talk speak quote guess lecture moralize hedge pad open close greet thank praise "
    "sugarcoat capitalize abbreviate indent comment wrap bold label link check double-check "
    "recap mark".split())
ASSISTANT_NOUNS = _re(
    r"\b(answers?|responses?|reply|replies|explanations?|examples?|code|snippets?|comments?|output|"
    r"messages?|words?|phrases?|sentences?|paragraphs?|lists?|headings?|headers?|tone|style|"
    r"formatting|jargon|questions?|summar(y|ies)|links?|steps|language|titles|abbreviations|"
    r"acronyms|intro|introductions?|conclusions?|preamble|filler|fluff|exclamation|caps|bullets?|"
    r"bullet points?|units|emojis?|markdown|"
    r"capital letters|pleasantries|small talk|puns|jokes)\b")

# Verbs that are about answering whatever follows; other behaviour verbs ("give", "be",
# "keep", "use") need something an assistant makes after them.
STRONG_VERBS = frozenset(
    "answer reply respond apologize apologise restate cite summarize summarise sugarcoat hedge "
    "lecture moralize abbreviate capitalize indent translate format".split())
STRONG_NOUNS = _re(
    r"\b(answers?|responses?|replies|reply|explanations?|examples?|code|snippets?|output|formatting|"
    r"tone|jargon|summar(y|ies)|steps|headings?|headers?|bullets?|lists?|paragraphs?|sentences?|"
    r"emojis?|markdown|citations?|sources?)\b")
QUOTED = re.compile(r"[\"“'‘][^\"”'’]{2,40}[\"”'’]")

STOP = frozenset(
    "a an and are as at be but by do does for from has have i if in into is it its me my of on or "
    "our so that the their this to was we were with you your please all any just more less always "
    "never don't dont not no use say stop avoid prefer should user user's again also very really "
    "it's i'm".split())
SYNONYMS = {"finish": "end", "close": "end", "conclude": "end", "recap": "summary", "tldr": "summary",
            "sum": "summary", "tell": "say", "write": "say", "utter": "say", "begin": "start",
            "open": "start", "reply": "answer", "respond": "answer", "response": "answer"}
NAME_STOP = frozenset(
    "a an the on in at by to of is was back later when if crazy anything whatever maybe now again "
    "what that this it me you please names name sir madam old stupid silly out up so just also "
    "and but or not".split())


@dataclass
class Phrased:
    rule: str  # short imperative sentence
    subject: str  # the key stored with the rule: "units=metric", "emoji=no", "free:+:words"
    value: str | None  # the subject's value, for lexicon subjects and facts
    positive: bool  # False for never/don't/stop/avoid
    standing: bool  # stated as a standing instruction
    correction: bool  # a correction of an answer
    one_off: bool = False  # "this time", "here": about this answer only

    @property
    def topic(self) -> str:
        """The subject without its value: rules with one topic and different values contradict."""
        return split_key(self.subject)[0]


def split_key(key: str | None) -> tuple[str, str | None]:
    """'units=metric' -> ('units', 'metric'); free-form keys have no value."""
    if not key:
        return "", None
    if key.startswith("free:"):
        return key, None
    topic, _, value = key.partition("=")
    return topic, (value or None)


def as_sentence(text: str) -> str:
    text = text.strip().rstrip(".!,;: ")
    return text[:1].upper() + text[1:] + "."


def _stem(word: str) -> str:
    for suffix in ("ing", "es", "s", "ed", "ly"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix) and not word.endswith("ss"):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    words = set()
    for w in re.findall(r"[\w+#/'-]+", text.lower()):
        w = w.strip("'-")
        if w in STOP or len(w) < 2:
            continue
        w = _stem(w)
        words.add(SYNONYMS.get(w, w))
    return words


def _singular(word: str) -> str:
    word = word.lower().strip()
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


# --- reading one sentence -----------------------------------------------------------------------


@dataclass
class _Clause:
    text: str  # original case
    low: str
    start: int  # offset in the sentence
    directive: bool
    question: bool


@dataclass
class _Mention:
    subject: Subject
    value: str | None  # None for polar subjects
    start: int
    end: int
    clause: _Clause
    negated: bool = False


def _clauses(sentence: str) -> list[_Clause]:
    out = []
    for m in re.finditer(r"[^,;:()\u2014\u2013]+", sentence):
        raw = m.group(0)
        # " but " / " so " start a new clause too.
        pieces = re.split(r"(?<=\S)\s+(?=(?:but|because|since)\s)", raw)
        offset = m.start()
        for piece in pieces:
            at = sentence.find(piece, offset)
            offset = at + len(piece)
            text = piece.strip()
            if not text or text in "-.":
                continue
            low = text.lower()
            bare = CLAUSE_LEAD.sub("", low).strip()
            question = bool(QUESTION_CLAUSE.match(bare)) and not POLITE_REQUEST.match(bare)
            out.append(_Clause(text, low, at + (len(piece) - len(piece.lstrip())),
                               bool(DIRECTIVE.search(low)), question))
    return out


def _mentions(sentence: str, clauses: list[_Clause]) -> list[_Mention]:
    low = sentence.lower()
    found: list[_Mention] = []
    for subject in SUBJECTS:
        if subject.context is not None and not subject.context.search(low):
            continue
        patterns = ([(None, subject.mention)] if subject.polar
                    else [(v.name, v.pattern) for v in subject.values])
        for value, pattern in patterns:
            for m in pattern.finditer(low):
                clause = next((c for c in clauses if c.start <= m.start() < c.start + len(c.text)), None)
                if clause is None:
                    continue
                found.append(_Mention(subject, value, m.start(), m.end(), clause))
    # Overlapping mentions of one subject: the longer one ("less formal" over "formal").
    found.sort(key=lambda x: (x.start, -(x.end - x.start)))
    kept: list[_Mention] = []
    for m in found:
        if any(k.subject is m.subject and k.start <= m.start < k.end for k in kept):
            continue
        kept.append(m)
    if MONEY.search(low):  # "I'm in the UK so use pounds": money, not weight
        currency = SUBJECT_BY_NAME["currency"]
        for m in kept:
            if m.subject.name == "units" and low[m.start:m.end] == "pounds":
                m.subject, m.value = currency, "gbp"
    for m in kept:
        m.negated = _negated(low, m)
    return kept


def _negated(low: str, m: _Mention) -> bool:
    clause = m.clause
    before = low[clause.start:m.start]
    after = low[m.end:clause.start + len(clause.text)]
    rest = low[m.end:]
    if ABSENCE.search(clause.low):
        return False  # "you forgot the type hints", "no sources again": wanted
    window = " ".join(before.split()[-6:])
    if NEGATORS.search(window) or AFTER_NEGATIVE.search(after) or AFTER_NEGATIVE.search(rest):
        if "prefer" in clause.low and re.search(r"\bover\b|\brather than\b|\binstead of\b", window) is None \
                and not re.search(r"\b(not|no|never|don'?t|without)\b", window):
            return False
        return True
    if PERMISSION.search(clause.low):
        return False
    return bool(NEGATIVE_SENTIMENT.search(clause.low)) and not clause.directive


def _is_excluded(sentence: str) -> bool:
    return bool(EXCLUDE.search(sentence))


NOT_NAMES = frozenset(
    "sorry fine okay ok good great here back new done ready sure afraid glad happy tired busy "
    "american british english german french spanish italian portuguese dutch japanese chinese "
    "russian polish swedish indian canadian australian irish scottish welsh mexican brazilian "
    "vegan vegetarian christian muslim jewish catholic coeliac celiac diabetic allergic".split())


def _name_fact(text: str) -> str | None:
    m = re.search(r"(?:\b(?:call me|my name is|my name'?s|address me as|i go by|refer to me as)|^\W*name'?s)"
                  r"\s+([A-Za-z][\w'-]*)(.*)$", text, re.I)
    if m:
        name, tail = m.group(1), m.group(2)
        if name.lower() in NAME_STOP or name.lower() in NOT_NAMES:
            return None
        if not name[0].isupper() and re.search(r"\w", tail.replace("please", "")):
            return None  # "call me crazy, but ...": a lowercase word followed by more words
        return name[:1].upper() + name[1:]
    # "I'm Lena by the way": a capitalised word, on its own, after I'm.
    m = re.search(r"\b(?:[Ii]'m|I am)\s+([A-Z][a-z]+)\b(?=\s*(?:[,.!;)]|$|by the way|btw|\bhere\b|"
                  r"\band\b|\(|-))", text)
    if m and m.group(1).lower() not in NOT_NAMES | NAME_STOP:
        return m.group(1)
    return None


# Food the user can't have: (key word, rule). Conditions first, then allergies, then avoidances.
FOOD_CONDITIONS = (
    (r"\b(coeliac|celiac)\b", "gluten", "The user has coeliac disease: suggest only gluten-free food."),
    (r"\blactose[- ]intolerant\b|\blactose intolerance\b", "lactose",
     "The user is lactose intolerant: avoid dairy with lactose."),
)
NOT_FOOD = frozenset("meat much a the that it any out late well anything this there here so too "
                     "like after before at".split())


def _food_facts(low: str) -> list[tuple[str, str]]:
    """[(ingredient key, rule)] for what the user can't or won't eat."""
    out = []
    for pattern, key, rule in FOOD_CONDITIONS:
        if re.search(pattern, low) and re.search(r"\bi(?:'m| am| have|'ve got| got)\b|\bmy\b", low):
            out.append((key, rule))
    m = re.search(r"\b(?:i'?m|i am|i'?ve been|i have been)\s+(?:\w+\s+){0,2}?allergic to\s+"
                  r"([a-z][a-z -]*?)(?=\s*(?:[,.;:!?)]|\band\b|\bso\b|\bbut\b|\bwhich\b|$))", low)
    what = m.group(1).strip() if m else None
    if what is None:
        m = re.search(r"\b(?:my|a|an|have)\s+(?:severe\s+|bad\s+|mild\s+|serious\s+)?([a-z]+)\s+"
                      r"allerg(?:y|ies)\b", low)
        if m and m.group(1) not in ("food", "severe", "bad", "mild", "serious", "an", "the"):
            what = m.group(1)
    if what:
        what = re.sub(r"\s+(as well|too|also|though)$", "", what)
        what = re.sub(r"^(most|some|all|many|certain)\s+", "", what)
        out.append((_singular(what.split()[-1]),
                    f"The user is allergic to {what}: never suggest anything containing {what}."))
    for m in re.finditer(r"\bi\s+(?:(?:don'?t|do not|never|can'?t|cannot|can not)\s+(?:eat|tolerate)|"
                         r"(?:can'?t|cannot|can not)\s+have)\s+"
                         r"(?:any\s+)?([a-z]+)\b|\b(?:has|have|needs?|must) to be ([a-z]+)-free\b|"
                         r"\bi (?:only )?eat ([a-z]+)-free\b", low):
        what = next(g for g in m.groups() if g)
        if what not in NOT_FOOD:
            out.append((_singular(what), f"The user does not eat {what}."))
    seen, unique = set(), []
    for key, rule in out:
        if key not in seen:
            seen.add(key)
            unique.append((key, rule))
    return unique


DIET_FACTS = (
    (r"\bi(?:'m| am)\s+(?:a\s+|an\s+|now\s+|strictly\s+|fully\s+|mostly\s+)?(vegetarian|vegan|pescatarian)\b",
     None),
    (r"\bi\s+(?:don'?t|do not|never|no longer|can'?t)\s+eat\s+(?:any\s+)?meat\b", "vegetarian"),
    (r"\bi\s+(?:went|have gone|became|am going|'ve gone)\s+(vegetarian|vegan|pescatarian)\b", None),
    (r"\b(vegetarian|vegan|pescatarian),?\s+(remember|i told you)\b", None),
)


def _religious_diet_fact(low: str) -> str | None:
    m = re.search(r"\bi(?:'m| am| eat| keep| only eat| follow| observe)\s+(?:a\s+|strictly\s+|only\s+)?"
                  r"(halal|kosher)\b", low)
    return m.group(1) if m else None


def _diet_fact(low: str) -> str | None:
    for pattern, value in DIET_FACTS:
        m = re.search(pattern, low)
        if m:
            return value or m.group(1)
    return None


def _fact_items(text: str, low: str, flags: dict) -> list[Phrased]:
    items = []
    if name := _name_fact(text):
        items.append(Phrased(f"Call the user {name}.", f"name={name.lower()}", name.lower(), True,
                             True, flags["correction"], flags["one_off"]))
    if diet := _diet_fact(low):
        items.append(Phrased(f"The user is {diet}: suggest only {diet} food.", f"diet={diet}", diet,
                             True, True, flags["correction"]))
    if rel := _religious_diet_fact(low):
        avoid = "pork or alcohol" if rel == "halal" else "pork, shellfish, or meat with dairy"
        items.append(Phrased(f"The user eats {rel}: suggest only {rel} food (no {avoid}).",
                             f"religious_diet={rel}", rel, True, True, flags["correction"]))
    for key, rule in _food_facts(low):
        items.append(Phrased(rule, f"food:{key}=no", "no", False, True, flags["correction"]))
    return items


def _choose(subject: Subject, mentions: list[_Mention]) -> tuple[str, bool] | None:
    """The value a sentence gives a subject, and whether it is stated positively."""
    directive = [m for m in mentions if m.clause.directive] or mentions
    if subject.polar:
        m = directive[0]
        return ("no" if m.negated else "yes"), not m.negated
    positive = [m for m in directive if not m.negated] or [m for m in mentions if not m.negated]
    if positive:
        return positive[0].value, True
    if len(subject.values) == 2:  # binary: "not miles" means the other value
        negated = mentions[0].value
        other = next(v.name for v in subject.values if v.name != negated)
        return other, True
    return None


def _rule_text(subject: Subject, value: str, sentence_low: str) -> str:
    rule = subject.value(value).rule
    if subject.name == "indentation" and value == "spaces":
        if m := re.search(r"\b(\d)\s+spaces\b", sentence_low):
            rule = f"Indent code with {m.group(1)} spaces."
    return rule


def _free_form(body: str, flags: dict) -> tuple[str, bool] | None:
    """A rule outside the lexicon, from the sentence's shape: (rule, positive) or None.

    Each shape carries its own signal (always/never/don't/stop/avoid/I prefer/
    I hate/again with/I meant); a bare imperative needs a standing cue, a
    correction, explicit feedback, or "please" and something an assistant makes."""
    if m := re.match(r"\W*(?:again|enough|done)\s+with\s+(?:the\s+|all\s+the\s+|these\s+|those\s+)?(.+)$",
                     body, re.I):
        return f"Avoid {m.group(1)}", False
    b = re.sub(r"^(please|pls|just|and|also|so|then|but|ok|okay|actually|now|oh|again)\b[\s,]*", "",
               body, flags=re.I).strip()
    low = b.lower()

    def about_answers(rest: str) -> bool:
        """An answering verb, with something an assistant makes ("don't give up" is not)."""
        first = re.sub(r"^(please|just|always|never|ever|not)\s+", "", rest.lower()).split(" ")[0]
        first = re.sub(r"[^\w'-]", "", first)
        if first in STRONG_VERBS or _stem(first) in STRONG_VERBS:
            return True
        return bool(ASSISTANT_NOUNS.search(rest) or QUOTED.search(rest))

    if re.search(r"\bwhen i say\b.+\bi (usually |always |normally |often )?mean\b", low):
        return b, True  # "when I say morning I mean after 8pm": how to read the user
    if m := re.match(r"(if|when|whenever)\s+([^,]+),\s*(always|never|please)\s+(.+)$", b, re.I):
        if about_answers(m.group(4)):
            return f"{m.group(1).capitalize()} {m.group(2)}, {m.group(3).lower()} {m.group(4)}", \
                m.group(3).lower() != "never"
    if m := re.match(r"(always)\s+(.+)$", b, re.I):
        if about_answers(m.group(2)):
            return f"Always {m.group(2)}", True
    if m := re.match(r"(?:there'?s\s+|there is\s+)?no need (?:to|for)\s+(.+)$", b, re.I):
        if about_answers(m.group(1)):
            return f"Do not {m.group(1)}", False
        return None
    if m := re.match(r"(never|don'?t ever|do not ever|don'?t|do not|no more|stop|quit|avoid)\s+(.+)$", b, re.I):
        rest = m.group(2)
        verb = m.group(1).lower()
        if verb in ("stop", "quit") and not re.match(r"\w+ing\b|with\b", rest, re.I):
            return None
        if about_answers(re.sub(r"ing\b", "", rest.split(" ")[0]) + " " + " ".join(rest.split(" ")[1:])) \
                or about_answers(rest):
            lead = {"never": "Never", "stop": "Stop", "quit": "Stop", "avoid": "Avoid",
                    "no more": "No more"}.get(verb, "Never" if "ever" in verb else "Do not")
            return f"{lead} {rest}", False
        return None
    if m := re.match(r"i(?:\s+would|'d)?\s+(?:prefer|really like|like|love)\s+(.+)$",
                     b, re.I):
        # "I'd like a snippet that hides a div" asks for something: not a preference.
        if STRONG_NOUNS.search(m.group(1)) and not re.match(r"to\s", m.group(1), re.I) \
                and not re.search(r"\b(that|which|who|about|for (my|this|the|a))\b", m.group(1), re.I):
            return f"Prefer {m.group(1)}", True
        return None
    if m := re.match(r"i\s+(?:hate|dislike|don'?t like|do not like|can'?t stand)\s+(?:it\s+when\s+you\s+)?(.+)$",
                     b, re.I):
        if ASSISTANT_NOUNS.search(m.group(1)) or "when you" in low:
            return f"Avoid {m.group(1)}", False
        return None
    if m := re.match(r"(?:i meant|i mean(?!,)|i asked for|i wanted)\s+(.+)$", b, re.I):
        if (flags["correction"] or low.startswith("i meant")) and not re.match(r"(to|what|how|why|when|where|who|which|is|are|do|does|can|that)\b",
                        m.group(1), re.I):
            return f"Use {m.group(1)}", True
        return None
    first = re.sub(r"[^\w'-]", "", low.split(" ")[0]) if low else ""
    if first in BEHAVIOUR_VERBS and about_answers(b) and not re.search(
            r"\b(this|that|these|those|the following|it|below|above|attached)\b", low) and (
            flags["standing_cue"] or flags["correction"] or flags["explicit"] or flags["please"]):
        return b, not re.search(r"\b(never|not|no)\b", low)
    return None


LEADS = _re(r"^\W*((no|nope)\s*[,.!:;-]+|(wrong|ok|okay|well|hey|also|and|but|so|sorry|actually|please|"
            r"pls|just|remember to|remember|from now on|going forward|in (the )?future|by default|for the record|"
            r"i told you|as i said|like i said|that'?s (wrong|not right|incorrect)|not quite|"
            r"oh|hmm|haha|one more thing|fyi|btw|then)\b)[\s,:;.!-]*")
TRAILS = _re(r"[\s,]*\b(please|thanks|thank you|from now on|going forward|ok|okay|btw)\W*$")


def _strip_leads(text: str) -> str:
    prev = None
    while prev != text:
        prev = text
        text = LEADS.sub("", text)
        text = TRAILS.sub("", text).strip(" ,;:-")
    return text


MODALS = frozenset("can can't cannot will won't would wouldn't should shouldn't must might may could "
                   "couldn't did didn't was wasn't had".split())


def _third_person(verb: str) -> str:
    low = verb.lower()
    if low in MODALS or low.endswith("ed"):
        return verb
    special = {"am": "is", "have": "has", "do": "does", "don't": "doesn't", "dont": "doesn't",
               "go": "goes", "'m": "is", "'ve": "has"}
    if low in special:
        return special[low]
    if re.search(r"(s|sh|ch|x|z|o)$", low):
        return verb + "es"
    if re.search(r"[^aeiou]y$", low):
        return verb[:-1] + "ies"
    return verb + "s"


def _user_words(text: str) -> str:
    """First person -> third person, for rules written from the user's words."""
    text = re.sub(r"\bI'?m\b|\bI am\b", "the user is", text)
    text = re.sub(r"\bI'?ve\b", "the user has", text)
    text = re.sub(r"\bI (usually |always |often |normally |mostly |never |really |just )?([a-z']+)\b",
                  lambda m: f"the user {m.group(1) or ''}{_third_person(m.group(2))}", text)
    text = re.sub(r"\bmy\b", "the user's", text, flags=re.I)
    text = re.sub(r"\bmine\b", "the user's", text, flags=re.I)
    text = re.sub(r"\bme\b", "the user", text, flags=re.I)
    text = re.sub(r"\bI\b", "the user", text)
    return text


def analyze(sentence: str, *, explicit: bool = False) -> list[Phrased]:
    """The preferences one sentence states, deterministically (empty when none)."""
    s = re.sub(r"\s+", " ", sentence.strip())
    if not s or len(s) > 400:
        return []
    if len(s) > 2 and s[0] in "\"“" and s[-1] in "\"”" and s.count('"') + s.count("“") + s.count("”") == 2:
        s = s[1:-1].strip()
    reminder = False
    if TAG_QUESTION.search(s):  # "Rust, remember?"
        s = TAG_QUESTION.sub("", s).strip()
        reminder = True
    if _is_excluded(s):
        return []
    clauses = _clauses(s)
    if not clauses:
        return []
    ends_with_question = s.rstrip().endswith("?")
    question = ends_with_question or any(c.question for c in clauses)
    if ends_with_question and len(clauses) == 1 and not POLITE_REQUEST.match(CLAUSE_LEAD.sub("", clauses[0].low)):
        return []
    kept = [c for c in clauses if not c.question]
    if not kept:
        return []
    # A polite request ("can you stop using emojis?") is an instruction.
    for c in kept:
        if POLITE_REQUEST.match(CLAUSE_LEAD.sub("", c.low)):
            c.directive = True
    kept_text = " , ".join(c.text for c in kept)
    kept_low = kept_text.lower()
    flags = {
        "standing_cue": bool(STANDING.search(kept_low)) or reminder,
        "habitual": bool(HABITUAL.search(kept_low)),
        "reversal": bool(REVERSAL.search(kept_low)),
        "correction": bool(CORRECTION.search(kept_low)),
        "one_off": bool(ONE_OFF.search(kept_low)),
        "explicit": explicit,
        "directive": explicit or reminder or any(c.directive for c in kept),
    }
    items = _fact_items(kept_text, kept_low, flags)

    mentions = [m for m in _mentions(s, clauses) if not m.clause.question
                and not (m.subject.name in ("units", "currency", "language") and TASK.search(m.clause.low))]
    by_subject: dict[str, list[_Mention]] = {}
    for m in mentions:
        by_subject.setdefault(m.subject.name, []).append(m)
    if flags["directive"]:
        for name, ms in by_subject.items():
            subject = SUBJECT_BY_NAME[name]
            chosen = _choose(subject, ms)
            if chosen is None:
                continue
            value, positive = chosen
            standing = (explicit or flags["standing_cue"] or flags["habitual"] or flags["reversal"])
            items.append(Phrased(_rule_text(subject, value, kept_low), f"{name}={value}", value,
                                 positive, standing, flags["correction"]))

    if not items and not question:
        flags["please"] = bool(re.search(r"\b(please|pls)\b", kept_low))
        if re.search(r"\bwhen i say\b", kept_low):
            bodies = [s]
        elif re.match(r"\W*(if|when|whenever)\b", s, re.I) or len(kept) == 1:
            bodies = [s] + ([c.text for c in kept] if len(kept) > 1 else [])
        else:  # the clause that says it, without the reasons around it ("X, not Y" stays whole)
            bodies = []
            for c in kept:
                if bodies and re.match(r"\W*(not|rather than|instead of|never)\b", c.text, re.I):
                    bodies[-1] += ", " + c.text
                else:
                    bodies.append(c.text)
            bodies.append(s)
        for body in bodies:
            body = _strip_leads(body)
            free = _free_form(body, flags) if body else None
            if not free:
                continue
            rule, positive = free
            rule = as_sentence(_user_words(rule))
            words = " ".join(sorted(content_words(rule)))
            if words:
                standing = explicit or flags["standing_cue"] or flags["habitual"]
                items.append(Phrased(rule, f"free:{'+' if positive else '-'}:{words}", None, positive,
                                     standing, flags["correction"]))
                break
    for item in items:
        item.one_off = flags["one_off"]
        if item.one_off:
            item.standing = False
    return items


def phrase(text: str) -> Phrased | None:
    """One feedback text -> its first rule, deterministically. None if nothing general is said."""
    items = phrase_all(text)
    return items[0] if items else None


def phrase_all(text: str, *, explicit: bool = True) -> list[Phrased]:
    """Every rule a feedback text states, one per subject (explicit feedback: looser gate)."""
    out: dict[str, Phrased] = {}
    for sentence in _sentences(text):
        for item in analyze(sentence, explicit=explicit):
            _merge_item(out, item)
    return list(out.values())


def _merge_item(out: dict[str, Phrased], item: Phrased) -> None:
    topic = item.topic
    if topic in out:  # one subject per text: the later sentence wins, flags add up
        old = out[topic]
        item.standing = item.standing or old.standing
        item.correction = item.correction or old.correction
    out[topic] = item


def _sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+|\n+|(?<=\.\.\.)|(?<=[!?])(?=\w)", text.strip())
    return [p.strip() for p in parts if p and p.strip(" .!?")]


def detect(text: str) -> list[tuple[str, str]]:
    """Feedback in a user message: [(kind, sentence)], kind 'preference' or 'correction'.

    Only sentences that say something general about how to answer count:
    ordinary questions and requests about the task at hand are not feedback.
    """
    found = []
    for sentence in _sentences(text):
        items = analyze(sentence)
        if items:
            correction = any(i.correction for i in items) and not any(i.standing for i in items)
            found.append(("correction" if correction else "preference", sentence))
    return found


# --- distillation --------------------------------------------------------------------


def _rule_key(rule: dict) -> str:
    """The key of a stored rule (older rules without '=' in their subject are re-read)."""
    subject = rule.get("subject") or ""
    if "=" in subject or subject.startswith("free:"):
        return subject
    p = phrase(rule["text"])
    return p.subject if p else f"free:+:{' '.join(sorted(content_words(rule['text'])))}"


def _free_similar(a: str, b: str) -> bool:
    """Two free-form keys that say the same thing in other words."""
    if not (a.startswith("free:") and b.startswith("free:")):
        return False
    wa, wb = set(a[7:].split()), set(b[7:].split())
    if not wa or not wb:
        return False
    return len(wa & wb) / min(len(wa), len(wb)) >= 0.6


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    return a[:7] == b[:7] and _free_similar(a, b)


def contradicts(a: str, b: str) -> bool:
    """Same subject, other value ('units=metric' / 'units=imperial'), or a free-form rule
    and its negation ('free:+:...' / 'free:-:...' with the same words)."""
    ta, va = split_key(a)
    tb, vb = split_key(b)
    if va is not None and vb is not None:
        return ta == tb and va != vb
    if a.startswith("free:") and b.startswith("free:") and a[5] != b[5]:
        wa, wb = set(a[7:].split()), set(b[7:].split())
        return bool(wa) and wa == wb
    return False


def key_for(text: str) -> str:
    """The key a rule's text would be stored with (lexicon subject, or its words)."""
    p = phrase(text)
    return p.subject if p else f"free:+:{' '.join(sorted(content_words(text)))}"


def rule_key(rule: dict) -> str:
    return _rule_key(rule)


def supersede_contradicting(store: Store, rule_id: int, key: str) -> list[int]:
    """Mark the live rules that contradict `key` as superseded by `rule_id`."""
    live = [(r, _rule_key(r)) for r in store.rules(("active", "candidate"))]
    return _supersede_others(store, rule_id, key, live)


def learn(store: Store, feedback_id: int, text: str, *, explicit: bool, min_support: int,
          seen_at: str | None = None, items: list[Phrased] | None = None) -> dict | None:
    """Fold one feedback item into the profile. Returns what happened (the first rule
    touched, with `outcomes` for every rule when the text said several things), or None."""
    if items is None:
        items = phrase_all(text, explicit=explicit)
    if not items:
        return None
    seen_at = seen_at or now_iso()
    outcomes = []
    with store.transaction():
        for item in items:
            outcomes.append(_learn_one(store, feedback_id, item, explicit=explicit,
                                       min_support=min_support, seen_at=seen_at))
    first = dict(outcomes[0])
    if len(outcomes) > 1:
        first["outcomes"] = outcomes
    return first


def _learn_one(store: Store, feedback_id: int, p: Phrased, *, explicit: bool, min_support: int,
               seen_at: str) -> dict:
    standing = (explicit or p.standing) and not p.one_off
    live = [(r, _rule_key(r)) for r in store.rules(("active", "candidate"))]

    # 1. The same preference again: support grows; a candidate may become active.
    same = [r for r, key in live if _same(key, p.subject)]
    if same:
        rule = sorted(same, key=lambda r: (r["status"] != "active", -r["support"]))[0]
        store.link_rule_source(rule["id"], feedback_id, seen_at)
        if rule["text"].startswith("The user does not eat") and not p.rule.startswith("The user does not eat"):
            store.update_rule(rule["id"], text=p.rule)  # "allergic to" says more than "does not eat"
        support = rule["support"] + 1
        if rule["status"] == "candidate" and (standing or support >= min_support):
            store.update_rule(rule["id"], status="active")
            superseded = _supersede_others(store, rule["id"], p.subject, live)
            out = {"action": "activated", "rule_id": rule["id"], "support": support}
            if superseded:
                out["superseded"] = superseded[0]
            return out
        return {"action": "supported", "rule_id": rule["id"], "support": support}

    # 2. A standing item that contradicts a rule on the same subject supersedes it:
    #    the newer word wins, the old rule is kept. A one-off remark only starts a candidate.
    contradicted = [r for r, key in live if contradicts(key, p.subject)]
    status = "active" if standing or min_support <= 1 else "candidate"
    new_id = store.add_rule(p.rule, status, p.subject, seen_at=seen_at)
    store.link_rule_source(new_id, feedback_id, seen_at)
    if contradicted and status == "active":
        superseded = _supersede_others(store, new_id, p.subject, live)
        return {"action": "superseded", "rule_id": new_id, "superseded": superseded[0],
                "status": status}
    return {"action": "added", "rule_id": new_id, "status": status}


def _supersede_others(store: Store, rule_id: int, key: str, live: list[tuple[dict, str]]) -> list[int]:
    done = []
    for rule, other in live:
        if rule["id"] != rule_id and contradicts(other, key):
            store.update_rule(rule["id"], status="superseded", superseded_by=rule_id)
            done.append(rule["id"])
    return done


def record_feedback(store: Store, text: str, *, source: str, kind: str, min_support: int,
                    message_id: int | None = None, source_message_id: int | None = None,
                    created_at: str | None = None, items: list[Phrased] | None = None
                    ) -> tuple[int, dict | None]:
    """Store a feedback item and fold it into the profile."""
    feedback_id = store.add_feedback(source, kind, text, message_id, source_message_id, created_at)
    outcome = None
    if kind not in ("good",):
        outcome = learn(store, feedback_id, text, explicit=(source == "explicit"),
                        min_support=min_support, seen_at=created_at, items=items)
    return feedback_id, outcome


def observe_user_message(store: Store, message_id: int, text: str, about_message_id: int | None,
                         min_support: int, created_at: str | None = None) -> list[dict]:
    """Implicit feedback: what the user's message says about how to answer.

    One feedback item per message: saying a thing twice in one message is not
    recurrence, so sentences about one subject are folded together.
    """
    sentences, items = [], {}
    for sentence in _sentences(text):
        found = analyze(sentence)
        if not found:
            continue
        sentences.append(sentence)
        for item in found:
            _merge_item(items, item)
    if not items:
        return []
    correction_only = all(i.correction and not i.standing for i in items.values())
    kind = "correction" if correction_only else "preference"
    with store.transaction():
        fid, outcome = record_feedback(
            store, " ".join(sentences), source="implicit", kind=kind, min_support=min_support,
            message_id=about_message_id if kind == "correction" else None,
            source_message_id=message_id, created_at=created_at, items=list(items.values()))
    return [{"feedback_id": fid, **(outcome or {})}]


# --- use ---------------------------------------------------------------------------------


def _rank(rule: dict) -> tuple:
    return (not rule["pinned"], -rule["support"], _desc(rule["last_seen"]), -rule["id"])


def _desc(ts: str) -> tuple:
    return tuple(-ord(c) for c in ts)


def topical(rule: dict) -> bool:
    """A rule that only matters for some prompts (units, food, code), so relevance can bring it
    back when the budget leaves it out; name, tone or length matter for every answer."""
    topic, _ = split_key(_rule_key(rule))
    subject = SUBJECT_BY_NAME.get(topic)
    if subject is not None:
        return bool(subject.topics)
    return topic.startswith("food:") or topic in ("diet", "religious_diet")


def relevant_to(rule: dict, prompt_words: set[str]) -> bool:
    """A rule shares words with the prompt, or the prompt is on one of its subject's topics."""
    if prompt_words & content_words(rule["text"]):
        return True
    topic, _ = split_key(_rule_key(rule))
    subject = SUBJECT_BY_NAME.get(topic)
    if subject is not None and prompt_words & {_stem(t) for t in subject.topics}:
        return True
    if topic.startswith("food:") or topic in ("diet", "religious_diet"):
        return bool(prompt_words & {_stem(t) for t in _FOOD_TOPICS})
    return False


def profile_for_prompt(store: Store, prompt: str, budget_tokens: int) -> tuple[list[dict], list[dict]]:
    """(rules always prepended, rules recalled for this prompt).

    Active rules by pinned, support, recency until the budget is spent. Rules
    for every answer (name, tone, length) take the budget before topical ones
    (units, food, code), because only topical rules can come back by
    relevance: the rest of the active rules and the candidates come back when
    they are relevant to the prompt (shared words, or the prompt is on their
    subject).
    """
    from mecli.memory import approx_tokens

    active = sorted(store.rules(("active",)), key=_rank)
    fill_order = sorted(active, key=lambda r: (not r["pinned"], topical(r)))  # stable: rank within
    always, overflow, used = [], [], 0
    for rule in fill_order:
        cost = approx_tokens(rule["text"]) + 2
        if used + cost <= budget_tokens or rule["pinned"]:
            always.append(rule)
            used += cost
        else:
            overflow.append(rule)
    always.sort(key=_rank)
    words = content_words(prompt)
    active_topics = {split_key(_rule_key(r))[0] for r in always}
    candidates = [r for r in store.rules(("candidate",))
                  if split_key(_rule_key(r))[0] not in active_topics]  # never against an active rule
    relevant = [r for r in overflow if relevant_to(r, words)]
    relevant += [r for r in candidates if relevant_to(r, words)]
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
