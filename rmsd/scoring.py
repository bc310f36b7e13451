"""Answer extraction and scoring primitives that the benchmarks (`rmsd.datasets`) compose.

They read text only (no item, no benchmark), so both the benchmarks and matching import them
from below. `rmsd.datasets.benchmark.extract_answer` / `score` compose them by task type.

Two modes everywhere:
- **harness**: what the community harness (lmms-eval) does, misfires included, so numbers
  stay comparable with published ones. Re-implemented from its documented behaviour:
  the ranked multiple-choice extractor (`letter_harness`), the legacy first-capital one
  (`letter_legacy`), MMMU's choice and open-answer parsers (`choice_mmmu`, `open_mmmu`).
- **strict**: what `rmsd match` uses on teacher samples, where a misread answer becomes a
  wrong training target. It reads `<answer>…</answer>` when present, reads committed answers
  however they are hedged or phrased ("I think it's B", "B: a red square", "In the video, B is
  correct"), never reads a letter out of an ordinary word or article ("A dog runs", "I think"),
  skips options only named as rejected ("not B", "B is wrong"), as possible ("it could be B")
  or as one of several ("either A or C", a listing of options), and returns None rather than
  guess (0 wrong letters and 0% abstention on the labelled corpus of tests/matching).
docs/extraction.md tabulates where the two differ. ROUGE-L is computed here (own LCS, the
`rouge-score` tokenisation, checked against that package in the tests).

    rmsd eval --recipe recipes/videomme/qwen2_5_vl_3b_rmsd.yaml --model runs/.../student
"""

from __future__ import annotations

import random
import re
from typing import Any

MODES = ("harness", "strict")

# ----------------------------------------------------------------------------- response regions
_THINK_PAIRS = (("<think>", "</think>"), ("<analysis>", "</analysis>"))
_FORMAT = re.compile(r"\s*<think>(?:(?!</?think>|</?answer>).)*</think>\s*<answer>((?:(?!</?think>|</?answer>).)*)"
                     r"</answer>\s*", re.S)


def format_ok(text: str | None) -> bool:
    """True when `text` is exactly `<think>…</think><answer>…</answer>` (one of each, non-empty answer)."""
    m = _FORMAT.fullmatch(text or "")
    return bool(m and m.group(1).strip())


def strip_reasoning(text: str) -> str:
    """Drop closed `<think>…</think>` / `<analysis>…</analysis>` blocks, as lmms-eval does before
    scoring (its `--reasoning_tags` default); an unclosed block is left in place."""
    for start, end in _THINK_PAIRS:
        while start in text and end in text[text.find(start):]:
            a = text.find(start)
            text = text[:a] + text[text.find(end, a) + len(end):]
    return text.strip()


def answer_region(text: str | None) -> str | None:
    """The part of a response that holds its answer (strict reading), or None.

    The last `<answer>` content when a tag is present (an unclosed tag counts: generation
    may stop before `</answer>`); else what follows the last `</think>`; None when a
    `<think>` was never closed (no answer was given) or nothing is left.
    """
    text = text or ""
    closed = re.findall(r"<answer>(.*?)</answer>", text, re.S)
    if closed:
        return closed[-1].strip() or None
    if "<answer>" in text:
        return text.rsplit("<answer>", 1)[1].strip() or None
    if "</think>" in text:
        return text.rsplit("</think>", 1)[1].strip() or None
    if "<think>" in text:
        return None
    return text.strip() or None


def harness_region(text: str | None) -> str:
    """What a harness scorer reads: the `<answer>` content if tagged, else the text without reasoning."""
    text = text or ""
    tagged = re.findall(r"<answer>(.*?)</answer>", text, re.S)
    return tagged[-1].strip() if tagged else strip_reasoning(text)


# ----------------------------------------------------------------------------- letters: harness
# lmms-eval `_task_utils/mcq_extract.py` (the extractor Video-MME, LVBench, ... call today):
# every letter in every format is a candidate; the highest-priority format wins, then the
# latest position. Its misfires are kept on purpose (see docs/extraction.md).
_ANSWER_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
    "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select",
    "i pick", "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
)
_RANK = {"start": 10, "end": 9, "phrase": 7, "(X)": 6, "X.": 5, "X:": 4, "X)": 3, "X ": 2, "fallback": 0}


def letter_harness(text: str | None, letters: list[str] | str = "ABCD") -> str | None:
    """The lmms-eval ranked multiple-choice extractor; None where it returns ""."""
    if not text or not text.strip():
        return None
    body = text.strip()
    for ch in ",.!?;:'\"":  # one pass per character, in this order, as the harness does
        body = body.strip(ch)
    padded = f" {body} "
    found: list[tuple[int, int, str]] = []  # (rank, position, letter)
    for x in letters:
        for form in ("(X)", "X.", "X:", "X)", "X "):
            pos = padded.rfind(form.replace("X", x))
            if pos >= 0:
                found.append((_RANK[form], pos, x))
    lower = padded.lower()
    for phrase in _ANSWER_PHRASES:
        at = lower.find(phrase)
        if at >= 0:  # every letter anywhere after the phrase, even inside a word ("Apple")
            found += [(_RANK["phrase"], pos, x) for x in letters if (pos := padded.find(x, at + len(phrase))) >= 0]
    core = padded.strip()
    for x in letters:
        if core.startswith(x) and (len(core) == 1 or not core[1].isalpha()):
            found.append((_RANK["start"], 0, x))
        if core.endswith(x) and (len(core) == 1 or not core[-2].isalpha()):
            found.append((_RANK["end"], len(padded) - 1, x))
    if not found:
        found = [(_RANK["fallback"], padded.rfind(x), x) for x in letters if x in padded]
    return max(found)[2] if found else None


# Video-MME's original extractor (lmms-eval before the ranked one; many papers' numbers).
# The two concatenated prefixes reproduce missing commas in that list: those phrases are never removed.
_LEGACY_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                    "The best option isThe correct option is", "Best answer:Best option:")


def letter_legacy(text: str | None, letters: list[str] | str = "ABCD") -> str | None:
    """The first capital option letter anywhere after removing a few prefixes: it reads "A" out
    of "According to…" and "B" out of "Based on…" (kept only to reproduce old numbers)."""
    s = (text or "").strip()
    for prefix in _LEGACY_PREFIXES:
        s = s.replace(prefix, "")
    m = re.search(f"[{''.join(letters)}]", s)
    return m.group(0) if m else None


# ----------------------------------------------------------------------------- letters: strict
_STOP = r"(?=\s*(?:$|[.,;:!?)\]*\n\"'，。；：！？]|[\u4e00-\u9fff]|\s(?:because|since|as|which|given|due|based|and|but|so|with|from|here)\b))"
_LETTER = rf"(?:\*\*\(?([A-Z])\)?\*\*|[(\[]([A-Z])[)\]]|\\boxed\{{([A-Z])\}}|([A-Z]){_STOP})"
# a letter that starts a statement about itself ("B is correct"): a bare capital followed by " is"
# cannot be an article or a pronoun among the offered letters
_LETTER_FIRST = r"(?:\*\*\(?([A-Z])\)?\*\*|[(\[]([A-Z])[)\]]|(?<![A-Za-z'’\-])([A-Z]))"
_HEDGE = r"(?:most\s+likely|more\s+likely|very\s+likely|likely|probably|almost\s+certainly|certainly|definitely|" \
         r"actually|really|clearly|surely|indeed)"
_STRONG = re.compile(
    r"(?:(?i:(?:final|correct|best|right)\s+(?:answer|option|choice)|answer|the\s+(?:option|choice)|"
    r"my\s+(?:answer|choice)|i(?:\s+would|\s+will|'d|'ll)?\s+(?:choose|select|pick|go\s+with))"
    r"(?i:\s+(?:is|would\s+be|should\s+be|must\s+be))?\s*[:：=\-]?\s*|答案\s*(?:应该)?(?:是|为)?\s*[:：]?\s*|"
    r"(?:故|所以|因此)?选(?:择)?\s*[:：]?\s*)" + _LETTER)
_TRAILING = re.compile(r"(?:[,:：\n]|\b(?:is|be|it's|its|so|thus|hence|therefore)\b)\s*" + _LETTER + r"\s*[.!。]?\s*$")
# committed but hedged: "I think it's B", "I'd say C", "my best guess is D", "it's probably B", "most likely (A)"
_OPINION = re.compile(
    r"(?i:\bi\s+(?:think|believe|guess|suspect|reckon|feel)|\bi(?:'d|\s+would)\s+(?:say|guess|go\s+for)|"
    r"\bi(?:'m|\s+am)?\s+(?:leaning|inclined|lean)\s+(?:towards?|to)|"
    r"\bi(?:'m|\s+am)\s+(?:fairly\s+|pretty\s+|quite\s+|very\s+|reasonably\s+)?(?:sure|confident|certain)|"
    r"\bmy\s+(?:best\s+)?guess(?:\s+(?:is|would\s+be))?)"
    r"(?i:\s+that)?(?i:\s*,?\s*(?:it(?:'s|’s|\s+is|\s+would\s+be|\s+must\s+be|\s+should\s+be)|"
    r"the\s+(?:correct\s+)?answer\s+is))?" + rf"(?i:\s+{_HEDGE})?(?i:\s+(?:option|choice))?\s*[:：]?\s*" + _LETTER)
_IT_IS = re.compile(r"(?i:\b(?:it|this|that)(?:'s|’s|\s+is|\s+must\s+be|\s+should\s+be|\s+would\s+be|\s+has\s+to\s+be))"
                    + rf"(?i:\s+{_HEDGE})?(?i:\s+(?:option|choice))?\s+" + _LETTER)
_ADVERB = re.compile(r"(?i:\b(?:most\s+likely|more\s+likely|likely|probably|definitely|certainly))\s*[,:]?\s+"
                     r"(?i:(?:it's|it\s+is)\s+)?(?i:(?:option|choice)\s+)?" + _LETTER)
# "B is correct", "C is most likely", "B seems right", "D is the one that ...", "(D) fits"
_VERDICT = re.compile(_LETTER_FIRST + r"(?i:\s+(?:is|seems|looks|appears)(?:\s+to\s+be)?\s+(?:(?:the\s+)?(?:most\s+)?"
                      r"(?:likely|correct|right|best|true|accurate|plausible)(?:\s+(?:answer|option|choice|one))?\b|"
                      r"the\s+answer\b|the\s+(?:one|object)\s+(?:that|which)\b|what\s+happens\b)|\s+(?:fits|matches)\b)")
_WEAK = re.compile(r"(?:\*\*\(?([A-Z])\)?\*\*|[(\[]([A-Z])[)\]]|(?i:\boption\s+|\bchoice\s+)\(?([A-Z])\)?(?![A-Za-z])"
                   r"|(?m:^[\s*_`'\"]*\(?([A-Z])\)?\s*[.):：,\-–—]\s+\S)|(?<![A-Za-z0-9])([A-Z])[:：]\s+\S)")
_ONLY = re.compile(r"[\s*_`'\"]*(?:\\boxed\{)?[(\[]?\s*([A-Z])\s*[)\]}]?[\s.:!*_`'\"。]*")
_REJECT_BEFORE = re.compile(r"(?:\bnot|n't|\bnever|rather\s+than|instead\s+of|\bexcept|\bexclud\w*|\beliminat\w*|"
                            r"\brul\w*\s+out|\bwithout|\beither|\bneither|\bnor|\bwhether|\bif|不是|排除|而非|不选)"
                            r"\s*(?:option|choice|answer)?\s*[:：]?\s*$", re.I)
# "it could be B", "might be A": named as possible, not chosen
_TENTATIVE_BEFORE = re.compile(r"\b(?:could|might|may)\s+(?:also\s+|well\s+)?(?:be\s+)?(?:option\s+|choice\s+)?$", re.I)
# doubt earlier in the same sentence ("I'm not sure whether B is correct"), unless a "but" turns it round
_UNSURE_BEFORE = re.compile(r"(?:\bnot\s+(?:sure|certain)|\bunsure|\buncertain|\bcan(?:not|'t|’t)\s+(?:tell|decide|"
                            r"determine|say|choose)|\bwonder)(?:(?!\bbut\b)[^.!?\n])*$", re.I)
_REJECT_AFTER = re.compile(r"\s*(?:is|seems|looks|appears|was|would\s+be)?\s*(?:definitely\s+|clearly\s+|also\s+|"
                           r"probably\s+|likely\s+)?(?:wrong|incorrect|not\b|isn't|false|invalid|eliminated|ruled\s+out|"
                           r"can\s+be\s+ruled|doesn't|does\s+not|cannot|can't|错|不对|不正确)", re.I)
_COORD_AFTER = re.compile(r"\s*(?:,|/|、|(?i:\bor\b|\band\b)|或|和)\s*(?i:option\s+|choice\s+)?[(\[]?\**[A-Z](?![A-Za-z])")
_COORD_BEFORE = re.compile(r"(?<![A-Za-z])[A-Z]\)?\**\s*(?:,|/|、|(?i:\bor\b|\band\b)|或|和)\s*(?i:option\s+|choice\s+)?"
                           r"[(\[]?\**$")
# another letter named as possible after the answer ("..., but D is also possible"): the reply has not chosen
_POSSIBLE = re.compile(_LETTER_FIRST + r"(?i:\s+(?:is|seems|looks)\s+(?:also\s+)?(?:possible|plausible|an?\s+option)\b)"
                       r"|(?i:\b(?:could|might|may)\s+also\s+be\s+)(?:option\s+)?\(?([A-Z])(?![A-Za-z])")


def _mentions(pattern: re.Pattern, region: str, letters: str) -> list[tuple[int, str]]:
    """(position, letter) of each match of `pattern` whose letter is offered and not rejected, only
    named as possible, doubted, or coordinated with another letter."""
    out = []
    for m in pattern.finditer(region):
        group = next(g for g in range(1, (m.lastindex or 0) + 1) if m.group(g))
        letter, start, end = m.group(group), m.start(group), m.end(group)
        end += len(re.match(r"[)\]}*]*", region[end:]).group(0))
        start -= len(re.search(r"[(\[*]*$", region[:start]).group(0))
        before, after = region[max(0, start - 40):start], region[end:end + 40]
        if letter not in letters or _REJECT_BEFORE.search(before) or _REJECT_AFTER.match(after):
            continue
        if _TENTATIVE_BEFORE.search(before) or _UNSURE_BEFORE.search(region[:start]):
            continue
        if _COORD_AFTER.match(after) or _COORD_BEFORE.search(before):
            continue
        out.append((start, letter))
    return out


def letter_strict(text: str | None, letters: list[str] | str = "ABCD") -> str | None:
    """The option letter the response commits to, or None.

    Order: the whole answer is a letter ("B", "(B)", "**B.**"); else the last commitment — an
    answer statement ("the answer is B", "Answer: (B)", "答案是 B", "选B", "…, B" at the end),
    a hedged one ("I think it's B", "probably B", "my best guess is B", "it's most likely B")
    or a verdict on a letter ("B is correct", "C is most likely", "B seems right") — unless a
    later sentence names another letter as possible ("…, but D is also possible"); else a
    single letter among bracketed/bold/"option X" mentions and option labels ("B: a red
    square", a line starting "B."). Mentions after a negation ("not B"), followed by a
    verdict against them ("B is wrong"), named as possible ("it could be B"), doubted in
    their sentence ("not sure whether B is right") or joined to another letter ("A or C")
    do not count. docs/extraction.md lists every form.
    """
    region = answer_region(text)
    if region is None:
        return None
    letters = "".join(letters)
    whole = _ONLY.fullmatch(region)
    if whole:
        return whole.group(1) if whole.group(1) in letters else None
    strong = [found for pattern in (_STRONG, _TRAILING, _OPINION, _IT_IS, _ADVERB, _VERDICT)
              for found in _mentions(pattern, region, letters)]
    if strong:
        position, chosen = max(strong)
        rivals = [m for m in _POSSIBLE.finditer(region) if m.start() > position
                  and next(g for g in m.groups() if g) in set(letters) - {chosen}]
        return None if rivals else chosen
    weak = {letter for _, letter in _mentions(_WEAK, region, letters)}
    return weak.pop() if len(weak) == 1 else None


# ----------------------------------------------------------------------------- numbers
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])([-−]?)(\d{1,3}(?:,\d{3})+(?![\d,])|\d+)(\.\d+)?(?:[eE]([-+]?\d+))?"
                     r"(?:\s*/\s*(\d+(?:\.\d+)?)(?![\d.]))?|(?<![A-Za-z0-9_.])([-−]?)\.(\d+)")
_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
          "seventeen eighteen nineteen twenty").split()
_WORD = re.compile(r"\b(" + "|".join(_WORDS) + r")\b", re.I)
_NUMBER_MARKER = re.compile(r"(?i:\banswer|\btotal|=|\bequals?|\btherefore|\bthus|\bso\b|\bresult)|答案")
_MARKER_GAP = re.compile(r"(?:[\s:：=,*]|(?i:is|are|of|be|equals?|approximately|about|around|there|count|get)\b)*")


def find_numbers(text: str, words: bool = False) -> list[tuple[float, int]]:
    """(value, position) of every number: thousands commas, negatives, decimals, exponents,
    simple fractions ("1/2" → 0.5). A hyphen between two numbers is a range, not a sign.
    With `words`, number words zero…twenty count when no digit does."""
    out = []
    for m in _NUMBER.finditer(text):
        if m.group(7) is not None:
            value = float("." + m.group(7)) * (-1 if m.group(6) else 1)
        else:
            value = float(m.group(2).replace(",", "") + (m.group(3) or "")) * 10 ** int(m.group(4) or 0)
            if m.group(5) is not None:
                if float(m.group(5)) == 0:
                    continue
                value /= float(m.group(5))
            value *= -1 if m.group(1) else 1
        out.append((value, m.start()))
    if words and not out:
        out = [(float(_WORDS.index(m.group(1).lower())), m.start()) for m in _WORD.finditer(text)]
    return out


def format_number(value: float) -> str:
    """Canonical text of a number: "3", "-2", "0.5", "1234"."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.6g}"


def number_harness(text: str | None) -> str | None:
    """The last number of the answer region (harness-style lenient reading, digits only)."""
    found = find_numbers(harness_region(text))
    return format_number(found[-1][0]) if found else None


def number_strict(text: str | None) -> str | None:
    """The one number the answer states (number words allowed), the one right after the last
    answer marker ("answer is", "in total", "=", "so") when several appear, else None."""
    region = answer_region(text)
    if region is None:
        return None
    found = find_numbers(region, words=True)
    if len({round(v, 9) for v, _ in found}) == 1:
        return format_number(found[0][0])
    at = {p: v for v, p in found}
    for marker in reversed(list(_NUMBER_MARKER.finditer(region))):  # "so 5", "answer is 5", "= 5", "答案是5"
        start = _MARKER_GAP.match(region, marker.end()).end()
        if start in at:
            return format_number(at[start])
    return None


def numbers_match(pred: str | float | None, gold: str | float | None, rel_tol: float = 1e-6,
                  abs_tol: float = 1e-6) -> bool:
    """Equal within tolerance (both must read as numbers)."""
    try:
        a, b = float(pred), float(gold)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return abs(a - b) <= max(abs_tol, rel_tol * max(abs(a), abs(b)))


# ----------------------------------------------------------------------------- time spans
_TIME = r"(\d{1,2}:\d{2}(?:\.\d+)?|\d+(?:\.\d+)?)(?:\s*(?:seconds?|secs?|s)\b)?"
_SPAN = re.compile(rf"[\[(]\s*{_TIME}\s*(?:,|-|–|—|~|to)\s*{_TIME}\s*[\])]|"
                   rf"(?<![A-Za-z0-9_.])(?:from\s+|between\s+)?{_TIME}\s*(?:-|–|—|~|\bto\b|\band\b|\buntil\b)\s*{_TIME}", re.I)


def _seconds(token: str) -> float:
    if ":" in token:
        minutes, seconds = token.split(":")
        return 60 * int(minutes) + float(seconds)
    return float(token)


def find_spans(text: str) -> list[tuple[float, float]]:
    """Every (start, end) written as "[1.2, 3.4]", "from 1.2s to 3.4s", "1.2-3.4 seconds",
    "between 0:05 and 0:12"; spans that end before they start are dropped."""
    spans = []
    for m in _SPAN.finditer(text):
        a, b = (g for g in m.groups() if g is not None)
        start, end = _seconds(a), _seconds(b)
        if end >= start:
            spans.append((start, end))
    return spans


def parse_span(text: str | None) -> tuple[float, float] | None:
    """The first span in `text`, or None."""
    spans = find_spans(text or "")
    return spans[0] if spans else None


def format_span(span: tuple[float, float]) -> str:
    def fmt(x: float) -> str:
        s = f"{x:.3f}".rstrip("0")
        return s + "0" if s.endswith(".") else s

    return f"[{fmt(span[0])}, {fmt(span[1])}]"


def span_harness(text: str | None) -> str | None:
    spans = find_spans(harness_region(text))
    return format_span(spans[-1]) if spans else None


def span_strict(text: str | None) -> str | None:
    """The one span the answer gives (several different ones: None)."""
    region = answer_region(text)
    spans = set(find_spans(region)) if region else set()
    return format_span(spans.pop()) if len(spans) == 1 else None


def temporal_iou(a: tuple[float, float] | None, b: tuple[float, float] | None) -> float:
    """Intersection over union of two [start, end] intervals; 0 when either is missing."""
    if a is None or b is None:
        return 0.0
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else float(a == b)


# ----------------------------------------------------------------------------- ROUGE-L
def _tokens(text: str) -> list[str]:
    """rouge-score's default tokenisation: lower case, runs of [a-z0-9], no stemming."""
    return re.findall(r"[a-z0-9]+", (text or "").lower())


def rouge_l(pred: str | None, ref: str | None) -> float:
    """ROUGE-L F1 (longest common subsequence of tokens); 0 when either side is empty."""
    a, b = _tokens(pred or ""), _tokens(ref or "")
    if not a or not b:
        return 0.0
    row = [0] * (len(b) + 1)  # one DP row: O(len(b)) memory
    for x in a:
        diag = 0
        for j, y in enumerate(b, 1):
            diag, row[j] = row[j], diag + 1 if x == y else max(row[j], row[j - 1])
    lcs = row[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


# ----------------------------------------------------------------------------- MMMU parsers
MMMU_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")


def choice_mmmu(text: str | None, options: list[str], seed: str | int = 0) -> str:
    """MMMU's multiple-choice parser (as lmms-eval's MMMU and Video-MMMU tasks use it): "(B)",
    then "B ", then "B.", then option text (responses over 5 words), the last mention winning;
    nothing found → a random letter, made deterministic here by `seed` (the item id)."""
    letters = [chr(ord("A") + i) for i in range(len(options))]
    body = text or ""
    for ch in ",.!?;:'":
        body = body.strip(ch)
    padded = f" {body} "
    cands = [x for x in letters if f"({x})" in padded]
    where = lambda x: padded.rfind(f"({x})")  # noqa: E731
    if not cands:
        cands = [x for x in letters if f"{x} " in padded] or [x for x in letters if f"{x}." in padded]
        where = lambda x: padded.rfind(f" {x} ")  # noqa: E731
    if not cands and len(padded.split()) > 5:
        cands = [x for x, o in zip(letters, options, strict=True) if o.lower() in padded.lower()]
        where = lambda x: padded.lower().rfind(options[letters.index(x)].lower())  # noqa: E731
    if not cands:
        return random.Random(f"mmmu-choice:{seed}").choice(letters) if letters else ""
    positions = [where(x) for x in cands]
    return cands[positions.index(max(positions))]  # first of equal maxima, like np.argmax


def numbers_mmmu(text: str) -> list[str]:
    """MMMU's number finder: comma-grouped, scientific, then plain numbers (as strings)."""
    commas = re.findall(r"-?\b\d{1,3}(?:,\d{3})+\b", text)
    scientific = re.findall(r"-?\d+(?:\.\d+)?[eE][+-]?\d+", text)
    plain = re.findall(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])", text)
    return commas + scientific + plain


def normalize_mmmu(text: str) -> list[Any]:
    """A number → [value rounded to 2 decimals]; else [lower-cased text], one letter padded by spaces."""
    text = text.strip()
    try:
        return [round(float(text.replace(",", "")), 2)]
    except ValueError:
        text = text.lower()
        return [" " + text, text + " "] if len(text) == 1 else [text]


def open_key_responses(text: str, indicators: tuple[str, ...] = MMMU_INDICATORS) -> list[str]:
    """MMMU's key sub-responses: per line, the shortest tail after an indicator word ("is ",
    "so ", "answer ", and "=" on the last line); the whole response when none is found.
    The harness lower-cases before splitting on ". [A-Z]", so only newlines split."""
    response = text.strip().strip(".").lower()
    parts = re.split(r"\.\s(?=[A-Z])|\n", response)
    keys = []
    for i, part in enumerate(parts):
        shortest = None
        for indicator in indicators + (("=",) if i == len(parts) - 1 else ()):
            if indicator in part:
                tail = part.split(indicator)[-1].strip()
                if not shortest or len(tail) < len(shortest):  # an empty first tail is replaced, as upstream
                    shortest = tail
        if shortest and shortest.strip() not in (":", ",", ".", "!", "?", ";", "'"):
            keys.append(shortest)
    return keys or [response]


def open_predictions(keys: list[str]) -> list[Any]:
    """Normalised predictions of key responses: the texts and every number in them."""
    preds = list(keys) + [n for k in keys for n in numbers_mmmu(k)]
    return list(dict.fromkeys(x for p in preds for x in normalize_mmmu(p)))


def open_mmmu_correct(gold: str | list[str], keys: list[str]) -> bool:
    """MMMU's open-answer match: a prediction number equal to a gold number (2 decimals), or a
    gold string contained in a prediction string."""
    golds = [x for g in (gold if isinstance(gold, list) else [gold]) for x in normalize_mmmu(str(g))]
    for pred in open_predictions(keys):
        if isinstance(pred, str):
            if any(isinstance(g, str) and g in pred for g in golds):
                return True
        elif pred in golds:
            return True
    return False
