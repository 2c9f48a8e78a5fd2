"""Candidate scoring for ``Patient/$match`` (FHIR R4 patient-operation-match.html),
tuned for a master patient index in China. Pure: Patients (JSON dicts) in, scores out;
no database, no Flask, no I/O.

R4 patient-operation-match.html asks for each returned Patient a search score from 0
to 1 (1 = most certain) and a ``match-grade`` of ``certain``, ``probable``,
``possible`` or ``certainly-not``, the results ordered from most to least likely.
:func:`score` gives both for one candidate, :func:`rank` orders, filters and limits a
candidate list, and :func:`blocking_keys` says which searches fetch the candidates.

Identifiers first
-----------------
Only identifiers of systems for which ``unique_systems(system)`` is true count (the
caller builds it from the registry, e.g. ``lambda s: (m := registry.match(s)) is not
None and m.entry.unique``). Values are compared with whitespace removed and
upper-cased, as :func:`fhirserver.model.identity_numbers.normalise` stores them.

* The same value in the same unique system: **certain**, score 1.0. It is the only way
  to "certain": a document number is issued to one person; names, birth dates and
  phones never identify one person in a population with ~300,000 people called
  张伟 (Zhang Wei). A conflicting value in a *different* unique system (say a second
  hospital record number) does not undo it: duplicate registrations are exactly what
  an MPI exists to find.
* Values one adjacent transposition apart (``...0615...`` / ``...0651...``), same
  system: a keying error, strong evidence *for* but not certain; the demographic score
  gets a bonus of ``NEAR_IDENTIFIER_BONUS`` (0.25), so agreeing name and birth date
  make it **probable**. (A GB 11643 check character catches every adjacent
  transposition, so the mistyped number is usually the one in the query.)
* Both hold the system but share no value (and are not a transposition): strong
  evidence *against*. The score loses ``CONFLICT_PENALTY`` (0.25) and is capped below
  "possible" (certainly-not) unless the demographics alone score at least
  ``STRONG_AGREEMENT`` (0.90); then it is capped below "probable" (at most possible),
  so a human reviews the pair instead of it vanishing.

Demographic weights (sum 1.0)
-----------------------------
==========  ======  ===================================================================
component   weight  why
==========  ======  ===================================================================
name        0.35    the most discriminating field people give, but common Chinese
                    names repeat massively, so it cannot carry a match alone
birthDate   0.30    stable and entered from the ID card; with the name it splits the
                    Zhang Weis into groups of a handful
phone       0.15    a mobile number is personal, but families register children and
                    parents under one number, and numbers change
gender      0.10    agreement says little (half of everyone), so small weight;
                    *disagreement* says a lot, see the penalties
address     0.10    changes with moving and is written in many ways; corroboration only
==========  ======  ===================================================================

Each component's agreement is in 0..1 (partial agreement described below) and is
multiplied by its weight. A component missing on either side adds nothing: missing
data is no evidence either way, and is not rescaled away either, so a candidate with
only name, birth date and gender agreeing (0.75) stays "possible" -- for common names
that is the honest grade. Strong disagreements subtract:

* ``GENDER_MISMATCH_PENALTY`` 0.25 when both state male/female and differ ("other"
  and "unknown" are no evidence): gender is rarely wrong, so this pulls a pair down
  a whole grade, but not to nothing (entry errors do happen).
* ``BIRTH_DATE_MISMATCH_PENALTY`` 0.10 and ``NAME_MISMATCH_PENALTY`` 0.10 when the
  field is comparable and agrees not even partially: this separates twins and
  same-address family members who share phone and address.

Partial agreement
-----------------
* Name: compared after NFKD folding (full-width letters, pinyin tone marks), case
  folding and removing spaces, hyphens, apostrophes and middle dots, so ``Zhang San``,
  ``ZHANG San``, ``Zhangsan``, ``Zhāng Sān`` and (family/given) ``San Zhang`` agree
  fully; ``text`` and ``family``/``given`` are interchangeable (``张三`` in text
  equals family 张 given 三; a Han text is split after the surname, compound surnames
  such as 欧阳 included). A family or given name one keystroke away (one substitution,
  insertion or deletion in names of 3+ letters, found with :mod:`difflib`, or two
  adjacent letters transposed: ``Wei``/``Wie``) agrees ``NAME_ONE_EDIT`` (0.7); the
  name agreement is the product of family and given agreement, so a shared surname
  alone (``Zhang Wei``/``Zhang Li``) is worth nothing. Han characters and pinyin are
  not comparable without transliteration data (none is installed), so such a pair is
  "missing", not a disagreement. A one-character substitution in a Han given name
  gets no credit: siblings share a generation character (张小明/张小红) and telling a
  homophone typo from a different name needs pinyin.
* birthDate: day and month swapped 0.7 (``DATE_SWAP``); one digit wrong or two
  adjacent digits transposed 0.6 (``DATE_ONE_DIGIT``); at a lower precision, same
  year and month 0.6, same year 0.3.
* Phone (``telecom`` with system phone or sms): digits only; a leading 0086/86
  country code and the domestic trunk 0 are dropped, then the last 11 digits compared,
  so ``+86 138-0013-8000`` = ``13800138000`` and ``+86 10 1234 5678`` =
  ``010-12345678``. Any shared number agrees fully.
* Address: city and district must be equal (with 省/市/区/县 suffixes ignored) and
  the line text is compared with :class:`difflib.SequenceMatcher` (0.3 locality +
  0.7 line); without lines the whole addresses are compared. Similarity below 0.5
  counts as 0 so unrelated addresses add no noise.

Grades and thresholds
---------------------
The score is rounded to 4 places and graded: >= 0.95 certain, >= 0.80 probable,
>= 0.60 possible, below that certainly-not. The weighted score is capped at
``WEIGHTED_CAP`` 0.94, so only the identifier rule reaches "certain" (R4
patient-operation-match.html: a certain match may be used without review; only a
shared document number justifies that). "probable" needs more than name, birth date
and gender (0.75), e.g. also a phone (0.90) or address (0.85), or a near-identical
document number; "possible" is what a human should review.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from difflib import SequenceMatcher
from typing import Any

# --- weights and thresholds (see the module docstring for why) ---------------------------
W_NAME = 0.35
W_BIRTH_DATE = 0.30
W_PHONE = 0.15
W_GENDER = 0.10
W_ADDRESS = 0.10

GENDER_MISMATCH_PENALTY = 0.25
BIRTH_DATE_MISMATCH_PENALTY = 0.10
NAME_MISMATCH_PENALTY = 0.10

NEAR_IDENTIFIER_BONUS = 0.25
CONFLICT_PENALTY = 0.25
STRONG_AGREEMENT = 0.90

CERTAIN = 0.95
PROBABLE = 0.80
POSSIBLE = 0.60
WEIGHTED_CAP = 0.94  # below CERTAIN: demographics alone never make a certain match

NAME_ONE_EDIT = 0.7
DATE_SWAP = 0.7
DATE_ONE_DIGIT = 0.6
DATE_SAME_MONTH = 0.6
DATE_SAME_YEAR = 0.3
ADDRESS_LOCALITY = 0.3
ADDRESS_FLOOR = 0.5

GRADES = ("certain", "probable", "possible", "certainly-not")


@dataclass(frozen=True)
class Candidate:
    """One ``$match`` result: the stored Patient, its search score (Bundle
    ``entry.search.score``) and its ``match-grade`` (R4 patient-operation-match.html)."""

    resource: dict[str, Any]  # a stored FHIR Patient (JSON dict)
    score: float  # 0.0 .. 1.0
    grade: str  # "certain" | "probable" | "possible" | "certainly-not"


def grade(value: float) -> str:
    """The match-grade of a score (thresholds in the module docstring)."""
    if value >= CERTAIN:
        return "certain"
    if value >= PROBABLE:
        return "probable"
    if value >= POSSIBLE:
        return "possible"
    return "certainly-not"


def score(
    query: dict[str, Any], candidate: dict[str, Any], unique_systems: Callable[[str], bool]
) -> tuple[float, str]:
    """Score one candidate Patient against the input Patient of ``$match``
    (R4 patient-operation-match.html): ``(score 0..1, match-grade)``.

    A shared unique identifier decides alone (certain); otherwise the weighted
    demographic score, raised by a near-identical identifier and lowered by a
    conflicting one, as the module docstring explains.
    """
    same, near, conflict = _identifier_evidence(query, candidate, unique_systems)
    if same:
        return 1.0, "certain"
    raw = _demographic(query, candidate)
    value = min(raw, WEIGHTED_CAP)
    if near:
        value = min(value + NEAR_IDENTIFIER_BONUS, WEIGHTED_CAP)
    if conflict:
        ceiling = PROBABLE if raw >= STRONG_AGREEMENT else POSSIBLE
        value = min(value - CONFLICT_PENALTY, ceiling - 0.01)
    value = round(min(max(value, 0.0), 1.0), 4)
    return value, grade(value)


def rank(
    query: dict[str, Any],
    candidates: Iterable[dict[str, Any]],
    unique_systems: Callable[[str], bool],
    *,
    count: int | None = None,
    only_certain: bool = False,
) -> list[Candidate]:
    """The candidates worth returning from ``$match``, best first
    (R4 patient-operation-match.html: "ordered from most likely to least likely").

    ``certainly-not`` candidates are dropped: the spec lets an MPI return an empty
    searchset, and listing non-matches only invites wrong merges. ``only_certain``
    (``onlyCertainMatches``) keeps only certain matches -- R4 says that with the flag
    set, potential (non-certain) matches are not to be returned. ``count`` (the
    ``count`` parameter) limits the number after filtering; ``None`` means no limit,
    0 an empty result. Equal scores keep the input order, so results are repeatable.
    """
    if count is not None and count < 0:
        raise ValueError(f"count must not be negative, not {count}")
    scored = [Candidate(c, *score(query, c, unique_systems)) for c in candidates]
    kept = [c for c in scored
            if c.grade != "certainly-not" and (not only_certain or c.grade == "certain")]
    kept.sort(key=lambda c: c.score, reverse=True)  # stable: ties keep input order
    return kept if count is None else kept[:count]


def blocking_keys(query: dict[str, Any]) -> list[tuple[str, str]]:
    """Search criteria (Patient search parameter, value) whose union fetches the
    candidates to score, so ``$match`` never scans every Patient.

    Each key is one search: every identifier (``system|value``, value normalised),
    the birth date (and its day/month swap, the commonest date error), each likely
    family name, each phone number (last 11 digits, see :func:`_phone_keys`). A typo
    in one field is caught through another. Values are escaped per search.html
    (``\\``, ``|``, ``,``, ``$``); duplicates are left out, order kept.

    The ``phone`` search is a token (exact) search: it finds only stored numbers
    written in the same digits-only form.
    """
    keys: list[tuple[str, str]] = []
    for ident in _dicts(query.get("identifier")):
        system, value = ident.get("system"), ident.get("value")
        if isinstance(system, str) and system and isinstance(value, str) and _norm_id(value):
            keys.append(("identifier", f"{_esc(system)}|{_esc(_norm_id(value))}"))
    born = query.get("birthDate")
    if isinstance(born, str) and _DATE.fullmatch(born):
        keys.append(("birthdate", born))
        swapped = _swapped_date(born)
        if swapped:
            keys.append(("birthdate", swapped))
    for name in _dicts(query.get("name")):
        for family in _family_keys(name):
            keys.append(("family", _esc(family)))
    for phone in sorted(_phone_keys(query)):
        keys.append(("phone", phone))
    return list(dict.fromkeys(keys))


# --- identifiers ----------------------------------------------------------------------


def _norm_id(value: str) -> str:
    """As validators.normalise stores it: whitespace out, upper-case."""
    return re.sub(r"\s+", "", value).upper()


def _unique_identifiers(
    patient: dict[str, Any], unique_systems: Callable[[str], bool]
) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for ident in _dicts(patient.get("identifier")):
        system, value = ident.get("system"), ident.get("value")
        if not (isinstance(system, str) and system and isinstance(value, str)):
            continue
        normalised = _norm_id(value)
        if normalised and unique_systems(system):
            out.setdefault(system, set()).add(normalised)
    return out


def _identifier_evidence(
    query: dict[str, Any], candidate: dict[str, Any], unique_systems: Callable[[str], bool]
) -> tuple[bool, bool, bool]:
    """(same value, adjacent transposition, conflict) over the unique systems both hold.

    A Patient may hold several values of one system (an old and a new passport): the
    system conflicts only when no value is shared or one transposition apart.
    """
    mine = _unique_identifiers(query, unique_systems)
    theirs = _unique_identifiers(candidate, unique_systems)
    same = near = conflict = False
    for system in mine.keys() & theirs.keys():
        if mine[system] & theirs[system]:
            same = True
        elif any(_adjacent_swap(a, b) for a in mine[system] for b in theirs[system]):
            near = True
        else:
            conflict = True
    return same, near, conflict


# --- demographics ---------------------------------------------------------------------


def _demographic(query: dict[str, Any], candidate: dict[str, Any]) -> float:
    """The weighted demographic score, penalties applied, clipped to 0..1."""
    total = 0.0
    name = _name_agreement(query, candidate)
    if name is not None:
        total += W_NAME * name - (NAME_MISMATCH_PENALTY if name == 0 else 0.0)
    born = _birth_date_agreement(query.get("birthDate"), candidate.get("birthDate"))
    if born is not None:
        total += W_BIRTH_DATE * born - (BIRTH_DATE_MISMATCH_PENALTY if born == 0 else 0.0)
    gender_q, gender_c = _gender(query), _gender(candidate)
    if gender_q and gender_c:
        total += W_GENDER if gender_q == gender_c else -GENDER_MISMATCH_PENALTY
    phones_q, phones_c = _phone_keys(query), _phone_keys(candidate)
    if phones_q and phones_c and phones_q & phones_c:
        total += W_PHONE
    address = _address_agreement(query, candidate)
    if address is not None:
        total += W_ADDRESS * address
    return min(max(total, 0.0), 1.0)


def _gender(patient: dict[str, Any]) -> str | None:
    """male/female only: "other" and "unknown" are no evidence either way."""
    value = patient.get("gender")
    return value if value in ("male", "female") else None


# --- names ----------------------------------------------------------------------------

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
#: Compound (two-character) surnames, so 欧阳娜娜 splits as 欧阳 + 娜娜.
_COMPOUND_SURNAMES = frozenset(
    ["欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒", "夏侯", "令狐", "端木", "独孤", "南宫", "西门", "申屠", "澹台", "轩辕", "呼延", "闻人", "赫连", "东郭", "太史", "百里", "钟离", "万俟", "司空"])


def _fold(value: str) -> str:
    """Comparable form: compatibility-decomposed (full-width to ASCII, tone marks
    split off), letters and digits only, case-folded."""
    return "".join(c for c in unicodedata.normalize("NFKD", value) if c.isalnum()).casefold()


@dataclass(frozen=True)
class _Name:
    han: bool
    wholes: frozenset[str]  # the full name, in each plausible order
    splits: frozenset[tuple[str, str]]  # plausible (family, given) readings


def _unstructured(raw: str) -> tuple[set[str], set[tuple[str, str]]]:
    """Readings of a name written in one string (``text``, or everything in ``family``).

    Latin: words split at spaces; the surname is first (Chinese order) or last
    (Western order). Han: no spaces, the surname is the first character, or the
    first two for a compound surname. One Latin word (``Zhangsan``) has no reading;
    it is compared whole.
    """
    words = [w for w in (_fold(p) for p in re.split(r"[\s,]+", raw)) if w]
    if not words:
        return set(), set()
    whole = "".join(words)
    if len(words) >= 2:
        splits = {(words[0], "".join(words[1:])), (words[-1], "".join(words[:-1]))}
        return {whole, words[-1] + "".join(words[:-1])}, splits
    if _HAN.search(whole) and len(whole) >= 2:
        cut = 2 if len(whole) >= 3 and whole[:2] in _COMPOUND_SURNAMES else 1
        return {whole}, {(whole[:cut], whole[cut:])}
    return {whole}, set()


def _names(patient: dict[str, Any]) -> list[_Name]:
    out: list[_Name] = []
    for name in _dicts(patient.get("name")):
        raw_family = name.get("family") if isinstance(name.get("family"), str) else ""
        raw_given = " ".join(g for g in name.get("given") or () if isinstance(g, str))
        raw_text = name.get("text") if isinstance(name.get("text"), str) else ""
        family, given = _fold(raw_family), _fold(raw_given)
        # The parts and the text are separate forms: they may be in different scripts
        # (family/given in pinyin, text in Han characters).
        if family and given:
            wholes, splits = {family + given, given + family}, {(family, given)}
        else:  # the whole name in one part, as some systems store it
            wholes, splits = _unstructured(raw_family or raw_given)
        forms = [(raw_family + raw_given, wholes, splits), (raw_text, *_unstructured(raw_text))]
        out.extend(_Name(bool(_HAN.search(raw)), frozenset(w), frozenset(s))
                   for raw, w, s in forms if w)
    return out


def _name_agreement(query: dict[str, Any], candidate: dict[str, Any]) -> float | None:
    """Best agreement over the name pairs written in the same script; None when no
    pair is comparable (one side has no name, or Han against pinyin)."""
    best: float | None = None
    for a in _names(query):
        for b in _names(candidate):
            if a.han != b.han:
                continue
            best = max(best or 0.0, _pair_agreement(a, b))
    return best


def _pair_agreement(a: _Name, b: _Name) -> float:
    if a.wholes & b.wholes:
        return 1.0
    best = 0.0
    if a.splits and b.splits:
        # Family and given both have to agree: a shared surname alone is worth nothing.
        for fa, ga in a.splits:
            for fb, gb in b.splits:
                best = max(best, _token_agreement(fa, fb) * _token_agreement(ga, gb))
        return best
    # One side is a single word (Zhangsan): split it at the other side's surname.
    for split_side, whole_side in ((a, b), (b, a)):
        for family, given in split_side.splits:
            for whole in whole_side.wholes:
                if whole.startswith(family) and len(whole) > len(family):
                    best = max(best, _token_agreement(given, whole[len(family):]))
                if whole.endswith(family) and len(whole) > len(family):
                    best = max(best, _token_agreement(given, whole[: -len(family)]))
    for wa in a.wholes:
        for wb in b.wholes:
            best = max(best, _token_agreement(wa, wb))
    return best


def _token_agreement(a: str, b: str) -> float:
    if a == b:
        return 1.0 if a else 0.0
    return NAME_ONE_EDIT if _one_keystroke(a, b) else 0.0


def _one_keystroke(a: str, b: str) -> bool:
    """Two adjacent characters transposed, or -- in names of 3+ characters -- one
    character substituted, inserted or deleted (read off :mod:`difflib` opcodes; a
    single differing block of at most one character on each side is exactly that).
    Shorter names are too short for one changed letter to still be the same name."""
    if not a or not b or a == b:
        return False
    if _adjacent_swap(a, b):
        return True
    if max(len(a), len(b)) < 3:
        return False
    ops = [op for op in SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
           if op[0] != "equal"]
    return len(ops) == 1 and max(ops[0][2] - ops[0][1], ops[0][4] - ops[0][3]) == 1


def _adjacent_swap(a: str, b: str) -> bool:
    """``b`` is ``a`` with two adjacent, different characters swapped."""
    if len(a) != len(b) or a == b:
        return False
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    return (len(diff) == 2 and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])


def _family_keys(name: dict[str, Any]) -> list[str]:
    """Likely family names of one HumanName, as the ``family`` search takes them
    (case-insensitive, starts-with; so ``zhang`` also finds a stored ``Zhangsan``)."""
    family = name.get("family")
    if isinstance(family, str) and family.strip() and (
            name.get("given") or not (_HAN.search(family) or " " in family.strip())):
        return [family.strip().casefold()]
    raw = family if isinstance(family, str) and family.strip() else name.get("text")
    if not isinstance(raw, str):
        return []
    words = [w for w in re.split(r"[\s,]+", raw.strip().casefold()) if w]
    if len(words) >= 2:
        return [words[0], words[-1]]
    if words and _HAN.search(words[0]):
        w = words[0]
        return [w[:2] if len(w) >= 3 and w[:2] in _COMPOUND_SURNAMES else w[:1]]
    return []


# --- birth date -----------------------------------------------------------------------

_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def _birth_date_agreement(a: Any, b: Any) -> float | None:
    """1.0 equal full dates; partial credit for the usual entry errors and for agreement
    at a lower precision; 0.0 disagreement; None when either is missing or malformed."""
    if not isinstance(a, str) or not isinstance(b, str):
        return None
    ma, mb = _DATE.fullmatch(a), _DATE.fullmatch(b)
    if ma is None or mb is None:
        return None
    if ma[3] and mb[3]:  # both full dates
        if a == b:
            return 1.0
        if ma[1] == mb[1] and ma[2] == mb[3] and ma[3] == mb[2]:
            return DATE_SWAP
        da, db = a.replace("-", ""), b.replace("-", "")
        one_digit = sum(x != y for x, y in zip(da, db, strict=True)) == 1
        return DATE_ONE_DIGIT if one_digit or _adjacent_swap(da, db) else 0.0
    # Different or partial precision: agreement only as far as both go.
    if ma[1] != mb[1]:
        return 0.0
    if ma[2] and mb[2]:
        return DATE_SAME_MONTH if ma[2] == mb[2] else 0.0
    return DATE_SAME_YEAR


def _swapped_date(value: str) -> str | None:
    """``value`` with day and month swapped, when that is another valid date."""
    m = _DATE.fullmatch(value)
    if m is None or not m[3] or m[2] == m[3]:
        return None
    try:
        return date(int(m[1]), int(m[3]), int(m[2])).isoformat()
    except ValueError:
        return None


# --- phone ----------------------------------------------------------------------------


def _phone_keys(patient: dict[str, Any]) -> set[str]:
    """Comparable phone numbers: digits only, without the 0086/86 country code and the
    domestic trunk 0, the last 11 digits (a mobile number; area code and number for
    a landline). Fewer than 7 digits is no number."""
    out: set[str] = set()
    for point in _dicts(patient.get("telecom")):
        value = point.get("value")
        if point.get("system") not in ("phone", "sms") or not isinstance(value, str):
            continue
        digits = re.sub(r"\D", "", value)
        if digits.startswith("0086"):
            digits = digits[4:]
        elif digits.startswith("86") and len(digits) >= 12:
            digits = digits[2:]
        digits = digits.lstrip("0")
        if len(digits) >= 7:
            out.add(digits[-11:])
    return out


# --- address --------------------------------------------------------------------------

_ADMIN_SUFFIX = re.compile(r"(省|市|区|县|自治区|自治州|自治县|特别行政区)$")


def _address_text(value: Any) -> str:
    if isinstance(value, list):
        value = "".join(v for v in value if isinstance(v, str))
    return _fold(value) if isinstance(value, str) else ""


def _locality(value: Any) -> str:
    """City or district without its administrative suffix (北京市 = 北京)."""
    return _ADMIN_SUFFIX.sub("", _address_text(value))


def _ratio(a: str, b: str) -> float:
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def _address_agreement(query: dict[str, Any], candidate: dict[str, Any]) -> float | None:
    """Best agreement over address pairs; None when either has no address."""
    mine, theirs = _dicts(query.get("address")), _dicts(candidate.get("address"))
    best: float | None = None
    for a in mine:
        for b in theirs:
            value = _one_address(a, b)
            if value is not None:
                best = max(best or 0.0, value)
    return best


def _one_address(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    line_a, line_b = _address_text(a.get("line")), _address_text(b.get("line"))
    if line_a and line_b:
        line = _ratio(line_a, line_b)
        places = [(_locality(a.get(k)), _locality(b.get(k))) for k in ("city", "district")]
        both = [x == y for x, y in places if x and y]
        value = (ADDRESS_LOCALITY * (sum(both) / len(both)) + (1 - ADDRESS_LOCALITY) * line
                 if both else line)
    else:
        full_a, full_b = _full_address(a), _full_address(b)
        if not full_a or not full_b:
            return None
        value = _ratio(full_a, full_b)
    return value if value >= ADDRESS_FLOOR else 0.0


def _full_address(address: dict[str, Any]) -> str:
    text = _address_text(address.get("text"))
    if text:
        return text
    return "".join(_address_text(address.get(k))
                   for k in ("state", "city", "district", "line"))


# --- helpers --------------------------------------------------------------------------


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a repeating element; anything malformed is skipped, not fatal:
    a stored Patient that cannot be compared simply scores low."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _esc(value: str) -> str:
    """Escape a search parameter value (search.html#escaping)."""
    return (value.replace("\\", "\\\\").replace("|", "\\|")
            .replace(",", "\\,").replace("$", "\\$"))


__all__ = ["GRADES", "Candidate", "blocking_keys", "grade", "rank", "score"]
