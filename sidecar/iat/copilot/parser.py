"""The offline copilot: a plain-language request to a Reply, deterministically (no model, no network).

A request is normalised (lower case, ids set aside, negated phrases dropped), split into clauses ("..., then ...",
"... and sync ..."), and each clause gets one family from the tables below; its handler fills the slots from the
project's vocabulary (Context: shot keys, runs, assets, instructions). Whatever is missing or ambiguous becomes a
question, and a destructive action is proposed only when its target is named outright (an id, "the project").
"""

from __future__ import annotations

import re
from dataclasses import replace

from iat.copilot import glossary
from iat.copilot.context import Context
from iat.copilot.replies import Proposal, Reply


def R(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.I)


UUID = R(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
NUMBERS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                      "fourteen fifteen sixteen".split())}
NUMWORD = "|".join(NUMBERS)
ORDINALS = {w: i + 1 for i, w in enumerate("first second third fourth fifth sixth seventh eighth ninth tenth".split())}
ORDINALS.update({f"{n}{'st' if n == 1 else 'nd' if n == 2 else 'rd' if n == 3 else 'th'}": n for n in range(1, 17)})
OPEN = ("draft", "queued", "running")
IMAGE_KINDS = ("final", "generated", "upscaled", "bg_removed", "input", "reference", "mask")
PROVIDERS = [("openai", r"open ?ai|dall-?e|gpt-?image"), ("comfyui", r"comfy(?:ui)?"),
             ("a1111", r"a1111|automatic ?1111|auto1111"), ("preview", r"preview")]
HELP = ("I can render shots (\"render s1 and s3 at dusk in the rain\"), check the quality of a run, sync storage, "
        "remove a background, upscale or color-correct an image, export the project, show costs, list or cancel "
        "instructions.")

# --- rewrites applied before anything is matched: phrases that would otherwise read as another intent ---
REWRITES = [
    (R(r"[\u2018\u2019`]"), "'"), (R(r"[\u2013\u2014]"), "-"), (R(r"\bcolour"), "color"),
    (R(r"^(?:hi|hello|hey|good (?:morning|afternoon|evening))\b(?=.*\w.*\w)"), " "),
    (R(r"\b(please|pls|plz|kindly)\b|\b(?:delete|remove|erase|touch|change)\w* nothing\b"), " "),
    (R(r"\bdouble[- ]check"), "check"), (R(r"\bquality[- ]check"), "quality check"),
    (R(r"\bre-(?=\w)"), "re"), (R(r"\bback[- ]up\b"), "backup"), (R(r"\bcut[- ]out\b"), "cutout"),
    (R(r"\bcut ((?:\S+ ){0,3}?)out\b"), r"cutout \1"), (R(r"\btwice as (?:big|large)\b"), "double size"),
    (R(r"\bdry[- ]?run\w*|\bsimulat\w*|\bpreview\s+(?=(?:a |the )?(?:sync|push|pull|upload))|"
       r"\bwhat would (?:a |the )?(?=(?:sync|push|pull|upload))"), " dryrun "),
    (R(r"\b(?:without|no|minus)\s+(?:any\s+|the\s+)?(?:rain|snow|fog|mist)\w*"), " fairweather "),
    (R(r"\b(last|latest|newest|most recent|recent|previous|current)\s+(generated|final|upscaled|cutout|input|"
       r"reference|mask)\b"), r"\1 kind_\2"),
]
NEGATED = R(r"\b(?:don'?t|do not|never|no need to|shouldn'?t|should not|mustn'?t|must not|without|not)\s+"
            r"(?:\w+\s+){0,2}?(?:delet|remov|eras|trash|destroy|wip|purg|get rid|discard|nuk|clear|clean|throw|"
            r"drop|scrap|overwrit|replac|cancel|stop|abort|sync|push|pull|upload|export|render|upscal|touch|"
            r"change|run|select|pick|use|do)\w*[^,.;!?]*?(?=\s*(?:[,.;!?]|\bbut\b|\binstead\b|\bjust\b|\bonly\b|"
            r"\bthen\b|$))")
SYNC_VERB = R(r"\b(sync\w*|synchroni[sz]\w*|push\w*|pull\w*|upload\w*|download\w*|backup|mirror\w*|fetch\w*|"
              r"replicat\w*|syncprune|dryrun)\b")
# Deleting remote objects is part of a sync only when a sync is asked for in the same request.
SYNC_PRUNE = R(r"(?:\band\s+)?\b(?:delet(?:e[sd]?|ing)|remov(?:e[sd]?|ing)|prun(?:e[sd]?|ing)|purg(?:e[sd]?|ing)|"
               r"clean(?:ing)? ?up)\b[^,.;]*?\b(?:remote\w*|s3|"
               r"bucket|cloud|orphan\w*|locally|local cop\w*|no longer|gone|stale)\b[^,.;]*|"
               r"\bwith (?:remote )?delet\w*")

SEQUENCE = R(r"\s*(?:[.!?;]+(?:\s+|$)|,?\s+(?:and\s+)?then\b|,?\s+after that\b|,?\s+afterwards\b|,?\s+and also\b|"
             r",\s*also\b)\s*")
SPLIT_VERBS = (r"render|rerender|redo|rerun|regenerate|generate|draw|redraw|check|qa|verify|inspect|review|validate|"
               r"sync|synchroni[sz]e|push|pull|upload|download|backup|remove|cutout|upscale|enlarge|export|zip|"
               r"package|bundle|archive|delete|erase|trash|destroy|wipe|purge|pick|choose|select|cancel|stop|abort|"
               r"show|list|tell|color|fix|make|run|create|produce|use|get rid|scale up|double|clear out|nuke")
AND_VERB = R(rf"\s*(?:,\s*(?:and\s+)?|\s+and\s+|\s+&\s+)(?=(?:{SPLIT_VERBS})\b)")
GREETING = R(r"^(?:hi|hello|hey|yo|thanks?|thank you|thx|cheers|ok(?:ay)?|great|cool|nice|perfect|good (?:morning|"
             r"afternoon|evening|night|day)|bye|goodbye|sure|yes|no|never ?mind)?(?:\s+(?:there|you|a lot|so much|"
             r"again|very much|all))*[\s!.,]*$")

# --- families: what a clause asks for ---
CANCEL = R(r"\b(cancel\w*|abort\w*|stop\w*|halt|kill|terminate|call off|(?:clear|empty|flush) (?:the )?queue)\b")
COSTS = R(r"\b(costs?|costing|spen[dt]|spending|expenses?|expensive|bill|billing|budget|money|paid|pay|charged?|"
          r"charges|burn(?:ed|t)?|price)\b")
STATUS = R(r"\b(status|queue[ds]?|instructions?|tasks?|progress|pending)\b|what (?:are|r) you (?:doing|working on|"
           r"up to)|what(?:'s| is) (?:running|happening|going on)|are you (?:busy|done|working)|\b(?:agent|copilot|"
           r"assistant) (?:is )?(?:doing|working|up to|busy)|\b(?:anything|something) (?:running|queued|going on)|"
           r"how(?:'s| is) it going|\b(?:done|finished|completed?|ready|stuck|over) yet\b|"
           r"^(?:is|are|has|have|did)\b.*\b(?:done|finish(?:ed)?|complete[sd]?|ready|stuck|over|end(?:ed)?)\s*$")
QUESTION = R(r"^(?:how|what|what's|whats|which|who|why|is|are|has|have|did|was|were|any|show|list|tell|display|"
             r"report|summari[sz]e)\b")
CANDIDATE = R(rf"\b(?:candidate|option|variant|version|alternative)\s*(?:#|no\.?|number|nr\.?)?\s*(\d+|{NUMWORD})\b|"
              rf"\b(?:the\s+)?({'|'.join(ORDINALS)})\s+(?:candidate|option|variant|version|one)\b")
SELECT = R(r"\b(use|pick|choose|select|go with|keep|prefer|make|set|mark|want|take|approve|promote|finali[sz]e)\b|"
           r"\bfinal\b")
DELETE = R(r"\b(delete\w*|remove\w*|eras\w+|trash\w*|destroy\w*|wipe\w*|purge\w*|get rid of|discard\w*|nuke\w*|"
           r"clear out|clean out|clean up|throw (?:away|out)|scrap|bin|drop)\b")
BACKGROUND = R(r"\b(backgrounds?|backdrops?|bg|cutout|isolate|knock ?out|matte)\b")
TRANSPARENT = R(r"\btransparen\w*")
UPSCALE = R(r"\b(upscal\w*|up-?res\w*|upsampl\w*|enlarg\w*|super-?res\w*|scale\s+(?:it\s+|them\s+)?up|bigger|larger|"
            r"double|triple|quadruple|increase (?:the )?(?:resolution|size)|higher res\w*|hi-?res)\b")
COLOR = R(r"\bcolor[- ]?(?:correct\w*|grad\w*|balanc\w*|fix\w*|match\w*)|\b(?:fix|correct|balance|adjust|grade|"
          r"enhance|improve|boost|tweak)\w*\s+(?:the\s+|its\s+|their\s+)?(?:colors?|white balance|tones?)\b")
EXPORT = R(r"\b(export\w*|zip\w*|archive\w*|tarball|tar(?:\.gz)?|tgz|bundle\w*|package\w*)\b|"
            r"\bsave\b.*\b(?:as|to|into) (?:an? )?(?:folder|directory|zip|archive|tarball)\b")
SYNC_NOUN = R(r"\b(s3|bucket|remote\w*|cloud|storage|minio)\b")
QA_STRONG = R(r"\b(qa|quality)\b")
QA_WEAK = R(r"\b(check\w*|inspect\w*|verif\w*|validat\w*|review\w*|assess\w*|evaluat\w*|audit\w*|look (?:at|over)|"
            r"examine|any good|how good|good enough|looks? (?:ok|okay|good|right|fine)|pass(?:es)?)\b")
PIPE_STRONG = R(r"\b(render\w*|rerender\w*|redo\w*|redone|rerun\w*|regenerat\w*|generat\w*|draw\w*|redraw\w*|drawn|"
                r"remake\w*|remade|reshoot|shoot|repaint)\b")
PIPE_WEAK = R(r"\b(run|make|do|create|produce|try|give me|again|over)\b")
NOUN_BEFORE = R(r"\b(the|last|latest|previous|recent|this|that|a|an|each|per|every|whole|my|our|new|final|its|first|"
                r"old|of|kind_\w+)\s*$")

# --- slots ---
TIMES = [("dawn", r"dawn|daybreak|sunrise|sun-?up|first light|early morning|mornings?"),
         ("dusk", r"dusk|evening|sunset|sun-?down|twilight|golden hour|nightfall"),
         ("night", r"night|nights|nighttime|night-time|midnight|after dark|dark|moonlit|moonlight"),
         ("day", r"day|daytime|daylight|midday|mid-day|noon|afternoon")]
WEATHERS = [("clear", r"clear(?:\s+(?:skies|sky|weather))?|fairweather|sunny|sunshine|sun|fair weather|dry|cloudless"),
            ("rain", r"rain\w*|drizzl\w*|showers?|storm\w*|thunder\w*|downpour|wet"),
            ("snow", r"snow\w*|blizzard\w*|sleet\w*|flurr\w*|wintry"), ("fog", r"fog\w*|mist|misty|mists|haz[ey]|smog")]
TIMES_RE = [(v, R(rf"\b(?:{p})\b")) for v, p in TIMES]
WEATHERS_RE = [(v, R(rf"\b(?:{p})\b")) for v, p in WEATHERS]
ALL_SHOTS = R(r"\b(?:all|every|each|entire|whole)\b(?:\s+(?:the|of|my|our|last|latest|previous|recent))*\s+"
              r"(?:shots?|panels?|scenes?|frames?|jobs?|run)\b|\ball of them\b")
LAST_RUN = R(r"\b(?:last|latest|previous|most recent|recent|newest|current)\s+(?:run|render|batch|generation)\b|"
             r"\b(?:that|the) run\b")
CANDIDATES_N = R(rf"\b(\d+|{NUMWORD})\s+(?:more\s+|different\s+|new\s+)?(?:candidates?|variations?|variants?|options?|"
                 rf"versions?|takes?|alternatives?|tries|attempts|images|pictures)\b|\bcandidates\s*[:=]?\s*(\d+)\b")
SEED = R(r"\bseed\s*(?:[:=#]|of|to|number|no\.?)?\s*(\d+)")
FACTOR = R(rf"\bx\s*(\d+)\b|\b(\d+)\s*(?:x|times|×|-?fold)\b|\bby (?:a factor of )?(\d+|{NUMWORD})\b|"
           rf"\bfactor (?:of )?(\d+|{NUMWORD})\b|\b({NUMWORD}) times\b")
FACTOR_WORDS = {"double": 2, "triple": 3, "quadruple": 4}
MONEY = R(r"\b(?:under|below|max(?:imum)?|at most|no more than|less than|budget of|limit of|cap(?:ped)? at|up to)\s*"
          r"\$\s*(\d+(?:\.\d+)?)|\b(?:under|below|max(?:imum)?|at most|no more than|less than|budget of|limit of|"
          r"cap(?:ped)? at|up to)\s*(\d+(?:\.\d+)?)\s*(?:usd|dollars?|bucks)\b")
URGENT, LOW = (R(r"\b(urgent\w*|asap|right away|immediately|high[- ]priority|top priority)\b"),
               R(r"\b(no rush|no hurry|low[- ]priority|whenever|when you (?:have|get) (?:the )?time|not urgent)\b"))
IMPLICIT = R(r"\b(it|this|that|them|these|those|last|latest|newest|most recent|recent|previous|current|final|"
             r"kind_\w+)\b")
FOREIGN_PROJECT = R(r"\b(?:in|of|from|for|to|on|inside|within)\s+project\s+([a-z0-9][\w-]*)")
GROUPS = [("day", r"days?|daily|today|yesterday|week\w*|month\w*|dates?|over time|tonight"),
          ("run", r"runs?|render\w*|batch\w*"), ("operation", r"operations?|steps?|actions?|calls?|stages?"),
          ("provider", r"providers?|vendors?|services?|apis?|models?")]
CANCEL_HINTS = [("storage_sync", r"sync\w*|push\w*|pull\w*|upload\w*|download\w*|backup"),
                ("pipeline_run", r"render\w*|runs?|generat\w*|pipeline|redo"),
                ("asset_edit", r"upscal\w*|background|cutout|color\w*|edit\w*"), ("qa_check", r"qa|quality|check\w*"),
                ("custom", r"export\w*|zip|delet\w*|select\w*|candidate")]
TOKEN = R(r"#?[a-z0-9][a-z0-9._-]*[a-z0-9]|#?[a-z0-9]|,|&")
SHOT_NOUNS = {"shot", "shots", "panel", "panels", "scene", "scenes", "frame", "frames", "page", "pages", "number"}
COUNT_WORDS = {"candidates", "variations", "variants", "options", "versions", "takes", "images", "times", "x"}
NOT_SHOTS = R(r"^(?:x\d+|s3|v\d+|mp\d|h26\d|gpt\w*|idref\w*|a1111|auto1111|automatic1111|kind_\w+)$")


def _propose(*proposals: Proposal, when: str = "") -> Reply:
    """The proposals, with a sentence saying what they do (the assistant's message)."""
    first = proposals[0].objective
    more = f" (and {len(proposals) - 1} more like it)" if len(proposals) > 1 else ""
    return Reply(kind="propose", text=f"Sure: I'll {first[0].lower()}{first[1:]}{more}{when}.", proposals=proposals)


def _ask(text: str, options=()) -> Reply:
    return Reply(kind="clarify", text=text, options=tuple(options)[:10])


def _num(word: str) -> int:
    return int(word) if word.isdigit() else NUMBERS[word]


class Clause:
    """One clause: its text (ids replaced by `idref<n>` tokens) and what it reads as."""

    def __init__(self, text: str, ids: list[str], ctx: Context):
        self.t, self.ids, self.ctx = text.strip(" ,"), ids, ctx
        self.refs = [(int(m.group(1)), m.start(), m.end()) for m in re.finditer(r"idref(\d+)", self.t)]
        self.shots = _shot_refs(self.t, ctx)
        self.family = _family(self)

    def id_roles(self) -> list[tuple[str, str | None]]:
        """Each id named, as run | asset | instruction | None: by what the project holds, else by the word before
        it ("run <id>"), else like the id before it in a list ("assets <a>, <b>")."""
        known = {"run": {r["id"] for r in self.ctx.runs}, "asset": {a["id"] for a in self.ctx.assets},
                 "instruction": {i["id"] for i in self.ctx.instructions}}
        out: list[tuple[str, str | None]] = []
        for n, (index, at, _) in enumerate(self.refs):
            words = [w for w in re.findall(r"[a-z]+", self.t[max(0, at - 30):at]) if w not in ("id", "no", "the")]
            word = words[-1] if words else ""
            role = next((k for k, ids in known.items() if self.ids[index] in ids), None) or (
                "run" if re.fullmatch(r"runs?", word) else "asset" if re.fullmatch(
                    r"assets?|images?|pictures?|pics?|files?|png|renders?|outputs?", word) else "instruction"
                if re.fullmatch(r"instructions?|tasks?|jobs?", word) else None)
            if role is None and n and re.fullmatch(r"[\s,&]*(?:and)?\s*", self.t[self.refs[n - 1][2]:at]):
                role = out[-1][1]
            out.append((self.ids[index], role))
        return out


def _verbs(rx: re.Pattern, t: str) -> bool:
    """A match of rx that is used as a verb (not "the last run", "the previous render")."""
    return any(not NOUN_BEFORE.search(t[:m.start()]) for m in rx.finditer(t))


def _deletes(t: str) -> bool:
    """A delete verb not about a background ("remove the background" is an edit)."""
    return any(not re.match(r"(?:\s+\S+){0,5}?\s+(?:background|backdrop|bg)s?\b", t[m.end():].split(",")[0])
               for m in DELETE.finditer(t))


def _family(c: Clause) -> str | None:
    t = c.t
    if CANCEL.search(t) and not re.search(r"\b(kill|terminate)\w* (?:the |this |that )?(project|assets?|images?)", t):
        return "cancel"
    if CANDIDATE.search(t) or (SELECT.search(t) and re.search(r"\bcandidates?\b", t)):
        return "select"
    if _deletes(t):
        return "delete"
    tod_weather = any(rx.search(t) for _, rx in TIMES_RE + WEATHERS_RE)
    shot_ref = bool(c.shots["keys"] or c.shots["unknown"] or c.shots["ambiguous"] or ALL_SHOTS.search(t))
    strong = [f for f, hit in (
        ("export", EXPORT.search(t)), ("sync", SYNC_VERB.search(t)),
        ("edit", BACKGROUND.search(t) or UPSCALE.search(t) or COLOR.search(t)
         or (TRANSPARENT.search(t) and not (QA_STRONG.search(t) or QA_WEAK.search(t)))),
        ("qa", QA_STRONG.search(t)),
        ("pipeline", _verbs(PIPE_STRONG, t) or re.search(r"\bpipeline\b", t)
         or (shot_ref and (_verbs(PIPE_WEAK, t) or tod_weather)))) if hit]
    question = QUESTION.search(t)
    if COSTS.search(t) and not MONEY.search(t) and (not strong or question):
        return "costs"
    if STATUS.search(t) and (not strong or question or re.search(r"\b(status|progress)\b", t)):
        return "status"
    if "pipeline" in strong and "edit" in strong and not c.refs:
        strong.remove("edit")  # "render s1 and upscale it 2x": the run's own upscale step
    if "export" in strong and "sync" in strong and re.search(r"\b(download|fetch)", t):
        strong.remove("sync")  # "download the project as a zip"
    if len(strong) > 1:
        return "ambiguous:" + ",".join(strong)
    if strong:
        return strong[0]
    if QA_WEAK.search(t):
        return "qa"
    if SYNC_NOUN.search(t):
        return "sync"
    if tod_weather or shot_ref or (_verbs(PIPE_WEAK, t) and re.search(r"\b(again|over)\b", t)):
        return "pipeline"
    return None


# --- shots ---

def _trailing(key: str) -> int | None:
    m = re.search(r"(\d+)$", key)
    return int(m.group(1)) if m else None


def _prefix(key: str) -> str:
    return re.match(r"[a-z]*", key.lower()).group(0)


def _fits(key: str, word: str) -> bool:
    """The key's letters fit the word used: "shot" fits s1 and shot-01, "panel" fits p1 and panel-04."""
    return bool(_prefix(key)) and (word.startswith(_prefix(key)) or _prefix(key).startswith(word))


def _by_number(n: int, hint: str, ctx: Context, strict: bool = False) -> list[str]:
    """Keys whose number is n; when several (or always, if strict), those whose letters fit the word used."""
    found = [k for k in ctx.shots if _trailing(k) == n]
    if (len(found) > 1 or strict) and hint:
        fits = [k for k in found if _fits(k, hint.rstrip("s"))]
        found = fits if strict else fits or found
    return found


def _shot_refs(t: str, ctx: Context) -> dict:
    """Shots named: known keys, "shot 2"/"panel 4" forms, ranges ("s1 to s3", "shots 1-3"); with those unknown and
    those ambiguous."""
    known = {k.lower(): k for k in ctx.shots}
    keys, unknown, ambiguous = [], [], []
    t = re.sub(rf"\b({'|'.join(ORDINALS)})\s+(shot|panel|scene|frame)s?\b", lambda m: f"{m.group(2)} "
               f"{ORDINALS[m.group(1)]}", t)
    toks = [tok.lstrip("#") for tok in TOKEN.findall(t)]
    storage = bool(SYNC_VERB.search(t) or re.search(r"\b(bucket|remote|cloud|storage)\b", t))
    noun, prev_n, ranging = "", None, False

    def between(lo: int, hi: int, prefix: str) -> list[str]:
        """Known keys numbered lo..hi, in number order ("shots 10 to 30": shot_010, shot_020, shot_030)."""
        found = sorted((k for k in ctx.shots if lo <= (_trailing(k) or -1) <= hi
                        and (not prefix or _prefix(k) == prefix)), key=_trailing)
        return found or [f"{prefix}{lo}-{prefix}{hi}"]

    def add(found: list[str], tok: str) -> None:
        if len(found) == 1:
            keys.append(found[0])
        elif found:
            ambiguous.append(found)
        else:
            unknown.append(tok)

    for i, tok in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if tok == "s3" and (storage or (i and toks[i - 1] in ("from", "into", "onto", "on", "in", "with"))
                            or (i and toks[i - 1] == "to" and prev_n is None)):
            continue  # the storage, not a shot
        if tok in SHOT_NOUNS:
            noun, prev_n, ranging = tok, None, False
            continue
        if tok in (",", "&", "and", "or", "plus") and (noun or prev_n is not None):
            continue
        if tok in ("to", "through", "thru", "till", "until", "-") and prev_n is not None:
            ranging = True
            continue
        span = re.fullmatch(r"([a-z]*)[-_.]?(\d+)-(?:\1)?[-_.]?(\d+)", tok)
        if tok in known:
            n, found = _trailing(tok), [known[tok]]
        elif span and (noun or span.group(1)):
            for key in between(int(span.group(2)), int(span.group(3)), span.group(1)):
                (keys if key in ctx.shots else unknown).append(key)
            prev_n = None
            continue
        elif noun and (tok.isdigit() or tok in NUMBERS) and nxt not in COUNT_WORDS:
            n = _num(tok)
            found = _by_number(n, noun, ctx)
        elif re.fullmatch(r"[a-z]+[-_.]?\d+", tok) and not NOT_SHOTS.match(tok) and nxt not in COUNT_WORDS:
            n = _trailing(tok)
            found = _by_number(n, _prefix(tok), ctx, strict=True)  # "panel-4", "shot2", "S01"
        else:
            noun, prev_n, ranging = "", None, False
            continue
        if ranging and prev_n is not None and n is not None and n > prev_n + 1:
            keys.extend(k for k in between(prev_n + 1, n - 1, "" if noun else _prefix(tok)) if k in ctx.shots)
        add(found, tok)
        prev_n, ranging = n, False
    return {"keys": list(dict.fromkeys(keys)), "unknown": unknown, "ambiguous": ambiguous}


def _latest_image(ctx: Context, t: str) -> str | None:
    kind = re.search(r"kind_(\w+)", t)
    want = {"cutout": "bg_removed"}.get(kind.group(1), kind.group(1)) if kind else None
    return next((a["id"] for a in ctx.assets if a["kind"] in IMAGE_KINDS and (want is None or a["kind"] == want)),
                None)


def _one(pairs, t: str) -> tuple[list[str], str | None]:
    """The values whose pattern matches, in table order, and the single one (None when none or several)."""
    found = [v for v, rx in pairs if rx.search(t)]
    return found, (found[0] if len(found) == 1 else None)


def _factor(t: str) -> int | None:
    m = FACTOR.search(t)
    if m:
        return _num(next(g for g in m.groups() if g))
    word = re.search(r"\b(double|triple|quadruple)\b", t)
    return FACTOR_WORDS[word.group(1)] if word else None


# --- handlers: one clause of a family to a Reply ---

def pipeline(c: Clause) -> Reply:
    t, ctx, shots = c.t, c.ctx, c.shots
    known = list(ctx.shots)
    if not known:
        return _ask("This project has no shots from earlier runs yet; start a run with a shot list first.")
    if shots["unknown"]:
        return _ask(f"I don't know shot {', '.join(shots['unknown'])}. Which shots do you mean?", known)
    if shots["ambiguous"]:
        return _ask("Which shot do you mean?", shots["ambiguous"][0])
    keys = shots["keys"]
    cast = [code for code, name in ctx.characters.items()
            if any(w and re.search(rf"\b{re.escape(w.lower())}\b", t) for w in (code, name))]
    if not keys and (ALL_SHOTS.search(t) or LAST_RUN.search(t) or cast):
        keys = [k for k in known if ctx.shot_runs.get(k) == ctx.last_run_id] if LAST_RUN.search(t) else known
        keys = [k for k in keys if set(cast) <= set(ctx.shots[k].get("characters") or [])]  # "the shots with Mira"
    if not keys:
        return _ask("Which shots should I render?", known)
    known_words = "|".join(p for _, p in WEATHERS) + "|the|same|current|any|nice|good|bad|usual|its|their"
    if (m := re.search(r"\b(\w+) weather\b", t)) and not re.fullmatch(rf"(?:{known_words})", m.group(1)):
        return _ask(f"I know clear, rain, snow and fog, not {m.group(1)!r} weather. Which one?",
                    ["clear", "rain", "snow", "fog"])
    times, tod = _one(TIMES_RE, t)
    weathers, weather = _one(WEATHERS_RE, t)
    if len(times) > 1 or len(weathers) > 1:
        return _ask("A run takes one time of day and one weather for all its shots. Which one?",
                    times if len(times) > 1 else weathers)
    inputs = {"shot_keys": keys, **({"time_of_day": tod} if tod else {}), **({"weather": weather} if weather else {})}
    execution: dict = {}
    if m := CANDIDATES_N.search(t):
        execution["candidates"] = _num(m.group(1) or m.group(2))
    if m := SEED.search(t):
        execution["seed"] = int(m.group(1))
    if provider := next((code for code, p in PROVIDERS if re.search(rf"\b(?:{p})\b", t)), None):
        execution["provider"] = provider
    if UPSCALE.search(t):
        execution["upscale_factor"] = _factor(t)
    if COLOR.search(t):
        execution["color_correct"] = True
    if re.search(r"\brefin\w*", t):
        execution["refine"] = True
    if BACKGROUND.search(t):
        return _ask("A run of known shots keeps their cutout setting; render first, then ask me to remove the "
                    "background of the image.")
    if not 1 <= execution.get("candidates", 1) <= 16:
        return _ask("A run makes 1 to 16 candidates per shot. How many?", ["2", "4", "8"])
    if execution.get("upscale_factor", 2) not in (2, 3, 4):
        return _ask("Upscale by how much?", ["2x", "3x", "4x"])
    words = {"rain": "in the rain", "snow": "in the snow", "fog": "in fog", "clear": "in clear weather"}
    objective = " ".join(filter(None, [f"Render shot{'s' if len(keys) > 1 else ''} {', '.join(keys)}",
                                       {"day": "in daylight"}.get(tod, f"at {tod}") if tod else "",
                                       words.get(weather, "")]))
    extras = [f"{execution['candidates']} candidates" if "candidates" in execution else "",
              f"with {execution['provider']}" if "provider" in execution else "",
              f"seed {execution['seed']}" if "seed" in execution else "",
              f"upscaled {execution['upscale_factor']}x" if "upscale_factor" in execution else "",
              "color-corrected" if "color_correct" in execution else "", "refined" if "refine" in execution else ""]
    objective += "".join(f", {e}" for e in extras if e)
    m = MONEY.search(t)
    constraints = {"max_cost_usd": float(m.group(1) or m.group(2))} if m else {}
    return _propose(Proposal("pipeline_run", objective, inputs, execution, constraints))


def qa(c: Clause) -> Reply:
    ctx, t = c.ctx, c.t
    execution = {**({"require_transparency": True} if TRANSPARENT.search(t) else {}),
                 **({"size_check": "aspect"} if "aspect" in t else {"size_check": "size"}
                    if re.search(r"\b(sizes?|dimensions)\b", t) else {})}
    roles = c.id_roles()
    runs = [i for i, r in roles if r == "run"]
    assets = [i for i, r in roles if r in ("asset", None)]
    if any(r is None for _, r in roles) and not re.search(r"\b(assets?|images?|pictures?|files?)\b", t):
        if re.search(r"\bruns?\b", t):
            runs, assets = runs + [i for i, r in roles if r is None], [i for i, r in roles if r == "asset"]
        else:
            first = next(i for i, r in roles if r is None)
            return _ask(f"Is {first} a run or an asset?", [f"QA run {first}", f"check asset {first}"])
    if not roles and re.search(r"\b(all|every|each)\b", t) and not LAST_RUN.search(t):
        return _ask("Which run or assets should I check?", ["check the quality of the last run"])
    if not roles:
        image = (_latest_image(ctx, t) if re.search(r"\b(images?|pictures?|assets?|kind_\w+)\b", t)
                 and not re.search(r"\bruns?\b", t) else None)
        if image:
            assets = [image]
        elif ctx.last_run_id:
            runs = [ctx.last_run_id]
        else:
            return _ask("There is no run to check yet. Which run or assets should I check?")
    if not runs and not assets:
        return _ask("I check runs and image assets, not instructions. Which run or assets?")
    proposals = [Proposal("qa_check", f"Check the quality of run {r}", {"run_id": r}, execution) for r in runs]
    if assets:
        proposals.append(Proposal("qa_check", f"Check the quality of {len(assets)} asset(s)", {"asset_ids": assets},
                                  execution))
    return _propose(*proposals)


def sync(c: Clause) -> Reply:
    t = c.t
    if re.search(r"\bbackup\b", t) and not (SYNC_NOUN.search(t) or re.search(r"\b(sync|push|upload|mirror)", t)):
        return _ask("Back up how: sync the project to remote storage, or export an archive?",
                    ["sync to S3", "export the project"])
    pull = bool(re.search(r"\b(pull\w*|download\w*|fetch\w*|restore)\b|\bfrom (?:the )?(?:s3|bucket|remote|cloud|"
                          r"storage)\b", t))
    inputs = {"direction": "pull" if pull else "push", "delete_remote": "syncprune" in t}
    execution = {"dry_run": True} if "dryrun" in t else {}
    objective = ("Pull the project from remote storage" if pull else "Push the project to remote storage") + (
        ", deleting remote files that have no local copy" if inputs["delete_remote"] else "") + (
        " (dry run)" if execution else "")
    return _propose(Proposal("storage_sync", objective, inputs, execution))


def edit(c: Clause) -> Reply:
    t, ctx = c.t, c.ctx
    ops = sorted((m.start(), op) for op, rx in (("remove_background", BACKGROUND), ("upscale", UPSCALE),
                                                 ("color_correct", COLOR), ("remove_background", TRANSPARENT))
                 if (m := rx.search(t)))
    ops = list(dict.fromkeys(op for _, op in ops))
    assets = [i for i, r in c.id_roles() if r not in ("run", "instruction")]
    if not assets and re.search(r"\b(all|every|each|both)\b", t):
        return _ask("I edit images one by one: which assets (by id)?")
    if not assets and IMPLICIT.search(t):
        assets = [a] if (a := _latest_image(ctx, t)) else []
    if not assets:
        latest = _latest_image(ctx, "")
        verbs = {"remove_background": "remove the background of", "upscale": "upscale",
                 "color_correct": "color correct"}
        return _ask("Which image should I edit?", [f"{verbs[op]} asset {latest}" for op in ops] if latest else [])
    factor = _factor(t) if "upscale" in ops else None
    if "upscale" in ops and factor not in (2, 3, 4):
        return _ask("Upscale by how much?", ["2x", "3x", "4x"])
    names = {"remove_background": "Remove the background of asset {}", "upscale": f"Upscale asset {{}} {factor}x",
             "color_correct": "Color-correct asset {}"}
    proposals = tuple(Proposal("asset_edit", names[op].format(a),
                               {"asset_id": a, "operation": op, **({"factor": factor} if op == "upscale" else {})})
                      for a in assets for op in ops)
    return _propose(*proposals)


def export(c: Clause) -> Reply:
    fmt = "zip" if re.search(r"\bzip", c.t) else "folder" if re.search(r"\b(folder|directory|dir)\b", c.t) else "tar.gz"
    objective = f"Export the project as {'a folder' if fmt == 'folder' else fmt}"
    return _propose(Proposal("custom", objective, {"action": "export_project", "format": fmt}))


def delete(c: Clause) -> Reply:
    reply = _delete(c)
    if reply.kind == "propose" and re.match(r"(?:how|what|why|should|when|where|does|do i|is it|would|can i)\b", c.t):
        # A question about deleting is not a request to delete.
        return _ask("Do you want me to do that? Ask me plainly and I'll propose it for your confirmation.",
                    [p.objective.lower() for p in reply.proposals])
    return reply


def _delete(c: Clause) -> Reply:
    t, ctx = c.t, c.ctx
    roles = c.id_roles()
    if any(r in ("run", "instruction") for _, r in roles):
        return _ask("I can delete assets or the whole project, not runs or instructions. What should go?")
    if roles:
        return _propose(*(Proposal("custom", f"Delete asset {a}", {"action": "delete_asset", "asset_id": a})
                          for a, _ in roles), when=" once you confirm")
    if SYNC_NOUN.search(t):
        return _ask("I won't delete remote files on a guess. Do you mean a sync that deletes remote files with no "
                    "local copy?", ["sync and delete remote files that are gone locally"])
    own = rf"{re.escape(ctx.slug.lower())}|{re.escape(ctx.project_name.lower())}"
    if re.search(rf"{DELETE.pattern}\s+(?:(?:the|this|our|my|whole|entire|current|complete|full|{own})\s+)*"
                 rf"(?:project\b|(?:{own})\b)(?!\s+(?:folders?|files?|dir\w*|assets?|stuff|contents?|data|outputs?|"
                 rf"images?|renders?|runs?|shots?))", t):
        return _propose(Proposal("custom", f"Delete project {ctx.project_name}", {"action": "delete_project"}),
                        when=" once you confirm")
    if re.search(r"\b(runs?|shots?|instructions?)\b", t):
        return _ask("I can delete assets (by id) or the whole project, not runs, shots or instructions.")
    image = _latest_image(ctx, t) if IMPLICIT.search(t) and not re.search(r"\b(all|every\w*)\b", t) else None
    return _ask("I only delete what is named outright: which asset (by id), or the whole project?",
                [f"delete asset {image}"] if image else [])


def select(c: Clause) -> Reply:
    t, ctx = c.t, c.ctx
    m = CANDIDATE.search(t)
    if not m:
        return _ask("Which candidate number should become the final?")
    index = _num(m.group(1)) if m.group(1) else ORDINALS[m.group(2)] - 1
    if not 0 <= index <= 15:
        return _ask(f"A shot has at most 16 candidates (0 to 15); there is no candidate {index}. Which one?")
    shots = _shot_refs(t[:m.start()] + " " + t[m.end():], ctx)
    if shots["unknown"] or shots["ambiguous"] or len(shots["keys"]) != 1:
        return _ask(f"For which shot should candidate {index} become the final?", list(ctx.shots))
    key = shots["keys"][0]
    runs = [i for i, r in c.id_roles() if r in ("run", None)]
    run_id = runs[0] if runs else ctx.shot_runs.get(key) or ctx.last_run_id
    if not run_id:
        return _ask(f"In which run should I pick candidate {index} for shot {key}?")
    objective = f"Make candidate {index} the final of shot {key} in run {run_id}"
    return _propose(Proposal("custom", objective, {"action": "select_candidate", "run_id": run_id, "job_key": key,
                                                   "candidate_index": index}))


def cancel(c: Clause) -> Reply:
    ctx, t = c.ctx, c.t
    if c.refs:
        target = c.ids[c.refs[0][0]]
        return Reply(kind="cancel", text=f"Canceling instruction {target}.", instruction_id=target)
    open_ = [i for i in ctx.instructions if i["status"] in OPEN]
    hinted = [kind for kind, p in CANCEL_HINTS if re.search(rf"\b(?:{p})\b", t)]
    if hinted:
        open_ = [i for i in open_ if i["instruction_type"] in hinted[:1]]
    if not open_:
        return _ask("There is no open instruction to cancel." if not hinted else
                    f"There is no open {hinted[0]} instruction to cancel.")
    if re.search(r"\b(all|everything|queue)\b", t) and len(open_) > 1:
        return _ask("I cancel one instruction at a time. Which one?", [f"cancel instruction {i['id']}" for i in open_])
    target = open_[0]
    return Reply(kind="cancel", text=f"Canceling instruction {target['id']} ({target['instruction_type']}).",
                 instruction_id=target["id"])


def costs(c: Clause) -> Reply:
    t = c.t
    per = [g for g, p in GROUPS if re.search(rf"\b(?:per|by|each|every|across|for each|on each)\s+(?:the\s+)?(?:{p})"
                                              rf"\b", t)]
    group = (per or [g for g, p in GROUPS if re.search(rf"\b(?:{p})\b", t)] or ["provider"])[0]
    return Reply(kind="answer", text=f"Here are the project's costs by {group}.",
                 query={"kind": "costs", "group_by": group})


def status(c: Clause) -> Reply:
    return Reply(kind="answer", text="Here are the latest instructions.", query={"kind": "instructions"})


HANDLERS = {"pipeline": pipeline, "qa": qa, "sync": sync, "edit": edit, "export": export, "delete": delete,
            "select": select, "cancel": cancel, "costs": costs, "status": status}
LABELS = {"pipeline": "render shots", "qa": "check quality", "sync": "sync storage", "edit": "edit an image",
          "export": "export the project"}


# --- the request as a whole ---

def _foreign(t: str, ctx: Context) -> str | None:
    """The other project a request names, if any."""
    own = {ctx.slug.lower(), ctx.project_name.lower()}
    taken = own | {k.lower() for k in ctx.shots} | {k.lower() for k in ctx.characters}
    for slug, name in ctx.other_projects.items():
        for label in (slug, name):
            parts = [p for p in re.split(r"[-_\s]+", (label or "").lower()) if p]
            if parts and label.lower() not in taken and re.search(
                    r"(?<![\w-])" + r"[-_\s]+".join(map(re.escape, parts)) + r"(?![\w-])", t):
                return label
    m = FOREIGN_PROJECT.search(t)
    if m and m.group(1) not in own and not re.search(rf"\b{re.escape(m.group(1))}\b", ctx.project_name.lower()) \
            and m.group(1) not in ("itself", "folder", "files", "as", "a", "an", "this", "root", "directory"):
        return m.group(1)
    return None


def _split(t: str) -> list[str]:
    return [piece for part in SEQUENCE.split(t) if part for piece in AND_VERB.split(part) if piece.strip(" ,")]


def parse(text: str, ctx: Context) -> Reply:
    ids: list[str] = []

    def keep(m: re.Match) -> str:
        ids.append(m.group(0).lower())
        return f" idref{len(ids) - 1} "

    t = " ".join(UUID.sub(keep, glossary.to_english(str(text or "").lower())).split())
    for rx, to in REWRITES:
        t = rx.sub(to, t)
    t = " ".join(t.split())
    if (other := _foreign(t, ctx)) is not None:
        return Reply(kind="refuse", text=f"I only act within project {ctx.project_name} ({ctx.slug}); {other!r} is "
                                         "another project. Open a chat in that project instead.")
    negated = [m.group(0) for m in NEGATED.finditer(t)]
    t = NEGATED.sub(" ", t)
    if SYNC_VERB.search(t):
        t = SYNC_PRUNE.sub(" syncprune ", t)
    clauses: list[Clause] = []
    for piece in _split(t):
        if GREETING.match(piece.strip()):
            continue
        clause = Clause(piece, ids, ctx)
        prev = clauses[-1] if clauses else None
        # "render s1 and make it rainy", "... and upscale it 2x", "cut out <id> and upscale it": one request.
        if prev and ((prev.family == "pipeline" and clause.family in ("pipeline", "edit", None)
                      and not clause.shots["keys"] and not clause.refs)
                     or (prev.family == "edit" and clause.family == "edit" and not clause.refs)):
            clause = Clause(prev.t + " and " + clause.t, ids, ctx)
            clauses[-1] = clause
            continue
        if prev and prev.family == "pipeline" and clause.family not in (None, "pipeline"):
            return _ask("Let's go one step at a time: what comes after the run has to wait until it is done. Shall I "
                        "start the run first?", [prev.t])
        clauses.append(clause)
    clauses = [c for c in clauses if c.family]
    if not clauses:
        if negated:
            return Reply(kind="help", text=f"Understood, I won't do that. {HELP}")
        shots = f" Shots I know: {', '.join(list(ctx.shots)[:10])}." if ctx.shots else ""
        return Reply(kind="help", text=f"Hello! {HELP}{shots}")
    replies = []
    for c in clauses:
        if c.family.startswith("ambiguous:"):
            options = [LABELS[f] for f in c.family.split(":")[1].split(",")]
            return _ask(f"Do you want me to {' or '.join(options)}? Please ask for one at a time.", options)
        reply = HANDLERS[c.family](c)
        if reply.kind == "clarify":
            return reply
        replies.append(reply)
    if len({(r.kind, r.instruction_id, str(r.query)) for r in replies if r.kind != "propose"}) + any(
            r.kind == "propose" for r in replies) > 1:
        return _ask("That is several different things; please ask for them one at a time.", [c.t for c in clauses])
    if replies[0].kind != "propose":
        return replies[0]
    proposals = tuple({repr(p): p for r in replies for p in r.proposals}.values())
    if len({c.family for c in clauses}) > 1 and any(c.family in ("delete", "select") for c in clauses):
        return _ask("That mixes a destructive action with others; please ask for it on its own.",
                    [c.t for c in clauses])
    priority = 500 if LOW.search(t) else 10 if URGENT.search(t) else 100
    text = " ".join(r.text for r in replies)
    return replace(replies[0], text=text, proposals=tuple(replace(p, priority=priority) for p in proposals))
