"""Find personal identifiers wherever the server wrote them, in any form a reader
would recognise: the proof of issue 12 "Privacy at rest" (PIPL article 51: encryption
of personal information; DESIGN.md section 1: "a stolen database dump should not
reveal who the patients are").

Pure functions, no pytest: :func:`needles` turns the secrets (a value and its
identifier system, or ``phone``/``email`` for a telecom) into the byte strings to look
for; :func:`scan_bytes` finds them in one buffer, :func:`scan_tree` in every file under
a directory, :func:`scan_documents` in every document of a MongoDB database, read
through the wire protocol, so that storage compression (PostgreSQL compresses large
``jsonb`` values in TOAST) cannot hide what a file scan would miss.

The forms of one value: as given; normalised (separators removed, upper case) and
lower case (a resident ID's ``x``); grouped as people write it (resident ID 6-8-4,
phone 3-4-4 with and without +86 / 0086, card numbers in fours; spaces or hyphens);
``system|value``; the query strings that carry it (``identifier=system|value``, also
percent-encoded, ``sourceIdentifier=``, ``phone=``, ``telecom=``, ``email=``); base64
(standard and URL-safe, padded and not) of the value, of ``system|value`` and of each
query string; hex; UTF-16-LE. A string embedded in a longer one that was base64
encoded as a whole comes out differently for each offset modulo 3, so the three
alignment-shifted cores of each base64 form are looked for too (the characters that
depend on the string's bytes only).
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

#: Shorter needles would match by chance in binary files.
MIN_NEEDLE = 6
CHUNK = 8 << 20
#: The files a data directory may hold secrets in: the keys (name any new key file here).
KEY_FILES = frozenset({"master.key"})


@dataclass(frozen=True)
class Secret:
    """One value that must not be readable at rest. ``system``: the identifier system
    URI, or the ContactPoint system (``phone``, ``email``) of a telecom value.
    ``label`` names it in reports without repeating it."""

    value: str
    system: str = ""
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or f"{self.system or 'value'} {mask(self.value)}"


@dataclass(frozen=True)
class Needle:
    """The bytes of one form of one secret."""

    secret: Secret
    form: str
    data: bytes = b""


@dataclass(frozen=True)
class Hit:
    """Where a needle was found: a file (relative path) or a document field, and the
    byte offset in that file or field."""

    where: str
    offset: int
    needle: Needle

    def __str__(self) -> str:
        return f"{self.where} @{self.offset}: {self.needle.secret.name} as {self.needle.form}"


def mask(value: str) -> str:
    """A value shortened for a report: enough to tell secrets apart, not to read them."""
    return value[:3] + "*" * max(len(value) - 5, 1) + value[-2:] if len(value) > 6 else "***"


# -- the forms of a value --------------------------------------------------------------

SEPARATORS = re.compile(r"[\s\-./()]")


def kind(secret: Secret) -> str:
    compact = SEPARATORS.sub("", secret.value).upper()
    if secret.system in ("phone", "sms", "fax"):
        return "phone"
    if secret.system == "email" or "@" in secret.value:
        return "email"
    if re.fullmatch(r"\d{17}[\dX]", compact):
        return "gb11643"
    if re.fullmatch(r"\d{20}", compact):
        return "card"
    return "other"


def _group(text: str, sizes: Sequence[int]) -> list[str]:
    parts, at = [], 0
    for size in sizes:
        parts.append(text[at:at + size])
        at += size
    if at < len(text):
        parts.append(text[at:])
    return [sep.join(parts) for sep in (" ", "-")]


def written_forms(secret: Secret) -> dict[str, str]:
    """The spellings of the value itself, form name -> text, the given one first."""
    value = secret.value
    compact = SEPARATORS.sub("", value)
    forms = {"as given": value, "normalised": compact.upper(), "lower case": value.lower(),
             "normalised lower case": compact.lower(), "upper case": value.upper()}
    k = kind(secret)
    if k == "gb11643":
        for case, text in (("", compact.upper()), (" lower case", compact.lower())):
            for sep, grouped in zip((" ", "-"), _group(text, (6, 8, 4)), strict=True):
                forms[f"grouped 6-8-4 '{sep}'{case}"] = grouped
    elif k == "phone":
        digits = re.sub(r"\D", "", value)
        national = re.sub(r"^(0086|86)(?=1\d{10}$)", "", digits)
        forms["national number"] = national
        for sep, grouped in zip((" ", "-"), _group(national, (3, 4, 4)), strict=True):
            forms[f"grouped 3-4-4 '{sep}'"] = grouped
            for prefix in ("+86", "0086", "86"):
                forms[f"{prefix} grouped '{sep}'"] = f"{prefix}{sep}{grouped}"
                forms[f"{prefix}{sep}"] = f"{prefix}{sep}{national}"
                forms[f"{prefix}"] = f"{prefix}{national}"
        forms["(+86) grouped"] = f"(+86) {_group(national, (3, 4, 4))[0]}"
    elif k == "card":
        for sep, grouped in zip((" ", "-"), _group(compact, (4, 4, 4, 4, 4)), strict=True):
            forms[f"grouped in fours '{sep}'"] = grouped
    return forms


def query_strings(secret: Secret) -> dict[str, str]:
    """The URL query strings (and their percent-encoded forms) that name the value."""
    value, system = secret.value, secret.system
    out: dict[str, str] = {}
    k = kind(secret)
    if k in ("phone", "email"):
        names = ("phone", "telecom") if k == "phone" else ("email", "telecom")
        for name in names:
            out[f"{name}=value"] = f"{name}={value}"
            out[f"{name}=value encoded"] = f"{name}={quote(value, safe='')}"
        cp = system or k
        out["telecom=system|value"] = f"telecom={cp}|{value}"
        out["telecom=system%7Cvalue"] = f"telecom={cp}%7C{quote(value, safe='')}"
        if k == "phone":
            national = written_forms(secret)["national number"]
            out["phone=+86"] = f"phone=%2B86{national}"
    elif system:
        for name in ("identifier", "sourceIdentifier"):
            out[f"{name}=system|value"] = f"{name}={system}|{value}"
            out[f"{name}=system%7Cvalue"] = f"{name}={system}%7C{value}"
            out[f"{name}=encoded"] = f"{name}={quote(system, safe='')}%7C{quote(value, safe='')}"
    return out


def texts(secret: Secret) -> dict[str, str]:
    """Every textual form: written forms, ``system|value``, query strings."""
    out = dict(written_forms(secret))
    if secret.system:
        out["system|value"] = f"{secret.system}|{secret.value}"
        out["system|value JSON-escaped"] = f"{secret.system}|{secret.value}".replace("/", "\\/")
        out["system%7Cvalue"] = f"{secret.system}%7C{secret.value}"
    for form, text in query_strings(secret).items():
        out[f"query {form}"] = text
    return out


def base64_forms(data: bytes) -> dict[str, bytes]:
    """Standard and URL-safe base64, padded and not, and the alignment-shifted cores:
    the characters of base64(prefix + data) that depend on ``data`` alone, for each
    length of the prefix modulo 3 (so that ``data`` embedded anywhere in a longer
    encoded string is found)."""
    out: dict[str, bytes] = {}
    for alphabet, encode in (("", base64.b64encode), (" urlsafe", base64.urlsafe_b64encode)):
        full = encode(data)
        out[f"base64{alphabet}"] = full
        out[f"base64{alphabet} unpadded"] = full.rstrip(b"=")
        for shift in range(3):
            shifted = encode(b"\0" * shift + data)
            first = -(-8 * shift // 6)  # the first character no prefix bit reaches
            last = 8 * (shift + len(data)) // 6  # after the last one whole in data
            out[f"base64{alphabet} core +{shift}"] = shifted[first:last]
    return out


def needles(secrets: Iterable[Secret]) -> tuple[Needle, ...]:
    """The byte strings to look for, each once (the first form that yields it)."""
    seen: dict[bytes, Needle] = {}

    def add(secret: Secret, form: str, data: bytes) -> None:
        if len(data) >= MIN_NEEDLE and data not in seen:
            seen[data] = Needle(secret, form, data)

    for secret in secrets:
        all_texts = texts(secret)
        for form, text in all_texts.items():
            add(secret, form, text.encode())
        encoded = [("value", secret.value)]
        if secret.system:
            encoded.append(("system|value", all_texts["system|value"]))
        encoded += [(f"query {f}", t) for f, t in query_strings(secret).items()]
        for what, text in encoded:
            for form, data in base64_forms(text.encode()).items():
                add(secret, f"{form} of {what}", data)
        add(secret, "hex", secret.value.encode().hex().encode())
        add(secret, "HEX", secret.value.encode().hex().upper().encode())
        add(secret, "UTF-16-LE", secret.value.encode("utf-16-le"))
    return tuple(seen.values())


# -- matching ----------------------------------------------------------------------------


def _trie_pattern(words: Iterable[bytes]) -> bytes:
    """One regular expression for many literals, as a trie: at each offset the regex
    engine follows one path, and the longest literal starting there wins."""
    trie: dict[Any, Any] = {}
    for word in words:
        node = trie
        for byte in word:
            node = node.setdefault(byte, {})
        node[None] = {}

    def emit(node: dict[Any, Any]) -> bytes:
        branches = [re.escape(bytes([b])) + emit(child)
                    for b, child in sorted((k, v) for k, v in node.items() if k is not None)]
        if not branches:
            return b""
        body = branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"
        return b"(?:" + body + b")?" if None in node else body

    return emit(trie)


@lru_cache(maxsize=16)
def _matcher(found: tuple[Needle, ...]) -> tuple[re.Pattern[bytes], dict[bytes, Needle], int]:
    by_data = {n.data: n for n in found}
    return re.compile(_trie_pattern(by_data), re.DOTALL), by_data, max(map(len, by_data))


def scan_bytes(data: bytes, found: tuple[Needle, ...], where: str = "") -> list[Hit]:
    """The needles in ``data``, leftmost-longest and not overlapping."""
    if not found or not data:
        return []
    pattern, by_data, _ = _matcher(found)
    return [Hit(where, m.start(), by_data[m.group()]) for m in pattern.finditer(data)]


def files(root: Path, exclude: Iterable[str] = KEY_FILES) -> Iterator[Path]:
    """Every regular file under ``root``: symbolic links are not followed, sockets,
    pipes and devices are skipped; ``exclude`` names files (by name or by path
    relative to ``root``) that are not scanned."""
    skip = frozenset(exclude)
    for top, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            path = Path(top, name)
            if name in skip or path.relative_to(root).as_posix() in skip:
                continue
            if stat.S_ISREG(path.lstat().st_mode):
                yield path


def scan_file(path: Path, found: tuple[Needle, ...], where: str = "", chunk_size: int = CHUNK
              ) -> list[Hit]:
    """The needles in one file, read in chunks that overlap by the longest needle."""
    if not found:
        return []
    _, _, longest = _matcher(found)
    hits: dict[int, Hit] = {}
    with open(path, "rb") as fh:
        base, tail = 0, b""
        while chunk := fh.read(chunk_size):
            buffer = tail + chunk
            for hit in scan_bytes(buffer, found, where or str(path)):
                at = base - len(tail) + hit.offset
                if at not in hits or len(hits[at].needle.data) < len(hit.needle.data):
                    hits[at] = Hit(hit.where, at, hit.needle)
            tail = buffer[-(longest - 1):] if longest > 1 else b""
            base += len(chunk)
    kept: list[Hit] = []
    for at in sorted(hits):  # as one pass would: leftmost-longest, no overlaps
        if not kept or at >= kept[-1].offset + len(kept[-1].needle.data):
            kept.append(hits[at])
    return kept


def scan_tree(root: Path, found: tuple[Needle, ...], exclude: Iterable[str] = KEY_FILES
              ) -> list[Hit]:
    """The needles in every file under ``root`` (see :func:`files`); an unreadable
    file raises: what was not read proves nothing."""
    hits: list[Hit] = []
    for path in files(root, exclude):
        hits += scan_file(path, found, path.relative_to(root).as_posix())
    return hits


# -- documents ---------------------------------------------------------------------------


def _fields(value: Any, path: str) -> Iterator[tuple[str, bytes]]:
    """Every key, string, number and binary in a decoded document, with its path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}{{key}}", str(key).encode()
            yield from _fields(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for n, item in enumerate(value):
            yield from _fields(item, f"{path}[{n}]")
    elif isinstance(value, bytes):
        yield path, bytes(value)
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        yield path, str(value).encode()


def scan_document(raw: bytes, found: tuple[Needle, ...], where: str) -> list[Hit]:
    """One BSON document: the field that holds a needle (its path in the hit), else
    the raw BSON bytes and the Extended JSON dump (for what no field shows as such)."""
    import bson
    from bson import json_util

    doc = bson.decode(raw)
    hits = [hit for path, data in _fields(doc, "") for hit in scan_bytes(data, found,
                                                                         f"{where} {path}")]
    if hits:
        return hits
    hits = scan_bytes(raw, found, f"{where} (raw BSON)")
    return hits or scan_bytes(json_util.dumps(doc).encode(), found, f"{where} (JSON)")


def scan_documents(db: Any, found: tuple[Needle, ...]) -> list[Hit]:
    """Every document of every collection of a pymongo ``Database`` (read as raw BSON),
    the collections' names and their index definitions."""
    from bson.codec_options import CodecOptions
    from bson.raw_bson import RawBSONDocument

    raw_options: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)
    hits: list[Hit] = []
    for name in sorted(db.list_collection_names()):
        where = f"{db.name}.{name}"
        hits += scan_bytes(name.encode(), found, f"{where} (collection name)")
        collection = db.get_collection(name, codec_options=raw_options)
        indexes = json.dumps(collection.index_information(), default=str).encode()
        hits += scan_bytes(indexes, found, f"{where} (indexes)")
        for n, doc in enumerate(collection.find()):
            hits += scan_document(doc.raw, found, f"{where} #{n}")
    return hits


def scan_client(client: Any, found: tuple[Needle, ...]) -> list[Hit]:
    """:func:`scan_documents` for every database of a server but its own."""
    return [hit for name in sorted(client.list_database_names())
            if name not in ("admin", "config", "local")
            for hit in scan_documents(client[name], found)]


def _place(hit: Hit) -> tuple[str, str]:
    """A hit's file or collection, and its field with list positions folded."""
    where, _, rest = hit.where.partition(" #")
    return where, re.sub(r"\[\d+\]", "[]", rest.partition(" ")[2])


def _system(secret: Secret) -> str:
    return secret.system.rsplit("/sid/", 1)[-1] or kind(secret)


def report(hits: Sequence[Hit], limit: int = 300) -> str:
    """Hits grouped by place, field and form (with the kinds of values found and how
    many distinct values), for an assertion message that names no value."""
    groups: dict[tuple[str, str, str], list[Hit]] = {}
    for hit in hits:
        groups.setdefault((*_place(hit), hit.needle.form), []).append(hit)
    lines = []
    for (where, path, form), found in sorted(groups.items()):
        systems = ", ".join(sorted({_system(h.needle.secret) for h in found}))
        values = len({h.needle.secret for h in found})
        lines.append(f"{where}{' ' + path if path else ''} [{form}]: {len(found)} hit(s) of "
                     f"{values} value(s): {systems}")
    more = f"\n... and {len(lines) - limit} more" if len(lines) > limit else ""
    return (f"{len(hits)} hit(s) in {len({_place(h)[0] for h in hits})} place(s):\n"
            + "\n".join(lines[:limit]) + more)
