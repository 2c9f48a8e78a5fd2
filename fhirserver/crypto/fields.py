"""Identity numbers and telecom values: encrypted where they are kept, blinded where
they are looked up.

PIPL articles 28, 29 and 51 ask for encryption of sensitive personal information;
DESIGN.md section 1 asks that a stolen database dump not reveal who the patients
are. Names and birth dates stay in clear (they must be searchable by prefix); what
is protected is what identifies a person on its own:

* **identity numbers**: the ``value`` of every Identifier, anywhere in a resource,
  whose ``system`` is one the identifier registry knows (resident ID, permits,
  passports, health card and hospital record numbers: ``identifier_systems.json``);
* **telecom**: the ``value`` of every ContactPoint (``telecom`` lists).

Three forms of a resource, all made here:

* **stored** (:meth:`FieldCipher.seal`): each such value replaced by ``{"e": ...}``,
  AES-256-GCM under the active data key (``data_keys.py``), the key id and a random
  96-bit nonce in front, the element's ``system`` bound in as associated data (a
  ciphertext moved to another element does not open). A JSON object never is an
  Identifier's or ContactPoint's ``value``, so the form cannot be mistaken for data.
* **opened** (:meth:`FieldCipher.open`): the stored form decrypted.
* **blinded** (:meth:`Blinder.blinded`): each such value replaced by its **blind
  index**, an HMAC-SHA256 under a key of its own (derived from the master key, never
  stored) of the normalised value. Search values, uniqueness claims and content
  hashes are computed from this form, so the database compares blind indexes and
  never sees the number; a search value is blinded the same way (:meth:`Blinder.value`).

A data key's rotation re-encrypts the stored form; the blind-index key does not
rotate (every index entry would change at once), which the README says.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import os
import re
import unicodedata
from collections.abc import Callable
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import SealError
from .data_keys import KeyRing

VERSION = "1"
#: The key of an encrypted value's object: ``{"e": "<version>.<kid>.<base64url>"}``.
ENCRYPTED = "e"
NONCE_BYTES = 12
#: Blind indexes start with this (the version of their form).
BLIND_PREFIX = "h1."
BLIND_BYTES = 18  # 144 bits: collisions are out of reach, the index stays short
IDENTIFIER = "identifier"
TELECOM = "telecom"
_SEPARATORS = re.compile(r"[\s\-()]+")
#: Elements whose values are ContactPoints: ``telecom`` lists, and an extension's
#: ``valueContactPoint`` (a second phone number kept in an extension is as
#: identifying as the first).
CONTACT_POINTS = frozenset({"telecom", "valueContactPoint"})

IsIdentitySystem = Callable[[str], bool]
Node = dict[str, Any]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def normalised(kind: str, value: str) -> str:
    """The form two writings of one number or address share: separators (spaces,
    hyphens, brackets) out, identity numbers upper-case (a check character ``x`` is
    ``X``), telecom lower-case (e-mail addresses compare without case)."""
    bare = _SEPARATORS.sub("", value)
    return bare.upper() if kind == IDENTIFIER else bare.lower()


def protected_nodes(resource: Any, is_identity: IsIdentitySystem) -> list[tuple[Node, str]]:
    """Every (element, kind) whose ``value`` is protected: Identifiers of a registered
    system and ContactPoints, in the resource, its contained resources and any
    Reference.identifier, found by shape (a walk, no schema)."""
    found: list[tuple[Node, str]] = []
    stack: list[tuple[Any, bool]] = [(resource, False)]
    while stack:
        node, telecom = stack.pop()
        if isinstance(node, list):
            stack.extend((item, telecom) for item in node)
        elif isinstance(node, dict):
            if telecom and "value" in node:
                found.append((node, TELECOM))
            elif "value" in node and "code" not in node and isinstance(node.get("system"), str) \
                    and is_identity(node["system"]):
                found.append((node, IDENTIFIER))
            for key, child in node.items():
                if isinstance(child, (dict, list)):
                    stack.append((child, key in CONTACT_POINTS))
    return found


NARRATIVE = "narrative"


_MARKUP = re.compile(r"<[^>]*>")
_NOT_ALNUM = re.compile(r"[\W_]+")
_DIGIT = re.compile(r"(?![0-9])\d")  # a decimal digit of another script


def _squeezed(text: str, markup: bool = False) -> str:
    """``text`` as the letters and digits a reader of it sees: markup out (kept with
    ``markup``: an attribute, a ``title`` or a ``mailto:`` link, holds text too),
    character references decoded (``&#53;`` is a 5), compatibility forms folded (a
    no-break space, full-width digits), digits of any script read as the digits they
    are (Arabic-Indic, Devanagari...), then nothing but letters and digits,
    upper-case. A number split by a tag, a reference or punctuation still shows the
    number."""
    seen = unicodedata.normalize("NFKC", html.unescape(text if markup else _MARKUP.sub("", text)))
    if not seen.isascii():
        seen = _DIGIT.sub(lambda m: str(unicodedata.decimal(m.group(), 0)), seen)
    return _NOT_ALNUM.sub("", seen).upper()


def _shows(div: str, wanted: list[str]) -> bool:
    """Does narrative ``div`` show one of the squeezed ``wanted`` values, in its text
    or in its markup?"""
    text, marked = _squeezed(div), _squeezed(div, markup=True)
    return any(w in text or w in marked for w in wanted)


def narratives_showing(resource: Any, values: list[str]) -> list[Node]:
    """The Narratives (``text`` of the resource and of its contained resources) whose
    ``div`` shows one of ``values``, however spaced, cased, punctuated, marked up or
    written with character references: a generated narrative
    renders identifiers and telecom as text, and would keep in clear what their
    elements keep encrypted."""
    wanted = [_squeezed(v) for v in values if len(_squeezed(v)) >= 4]
    if not wanted:
        return []
    return [node["text"] for node in _dicts(resource)
            if isinstance(node.get("text"), dict) and isinstance(node["text"].get("div"), str)
            and _shows(node["text"]["div"], wanted)]


def _dicts(tree: Any) -> list[Node]:
    """Every JSON object in ``tree``, itself included (iterative: no recursion limit)."""
    found: list[Node] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            found.append(node)
            stack.extend(c for c in node.values() if isinstance(c, (dict, list)))
    return found


def _owner(resource: dict[str, Any]) -> str:
    """The resource an encrypted value belongs to (associated data): a ciphertext
    copied into another resource's document does not open there."""
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def _copy(resource: Any) -> Any:
    """A deep copy of JSON data (dicts and lists; leaves are shared, being immutable)."""
    if isinstance(resource, dict):
        return {k: _copy(v) for k, v in resource.items()}
    if isinstance(resource, list):
        return [_copy(v) for v in resource]
    return resource


class Blinder:
    """Blind indexes under one key (HMAC-SHA256, RFC 2104)."""

    def __init__(self, key: bytes, is_identity: IsIdentitySystem) -> None:
        self._key = key
        self.is_identity = is_identity

    def value(self, kind: str, value: str) -> str:
        """The blind index of ``value``."""
        digest = hmac.new(self._key, f"{kind}\x1f{normalised(kind, value)}".encode(),
                          hashlib.sha256).digest()
        return BLIND_PREFIX + _b64(digest[:BLIND_BYTES])

    def keyed(self, purpose: str, text: str) -> str:
        """A keyed hash of ``text`` for one purpose (lock names, claim keys): hex."""
        return hmac.new(self._key, f"{purpose}\x1f{text}".encode(), hashlib.sha256).hexdigest()

    def blinded(self, resource: dict[str, Any]) -> dict[str, Any]:
        """``resource`` with every protected value replaced by its blind index: what
        search values and content hashes are computed from."""
        nodes = protected_nodes(resource, self.is_identity)
        if not nodes:
            return resource
        copy: dict[str, Any] = _copy(resource)
        found = protected_nodes(copy, self.is_identity)
        plain = [n["value"] for n, _ in found if isinstance(n.get("value"), str)]
        for text in narratives_showing(copy, plain):
            text["div"] = self.value(NARRATIVE, text["div"])
        for node, kind in found:
            if isinstance(node.get("value"), str):
                node["value"] = self.value(kind, node["value"])
        return copy


class FieldCipher:
    """Encrypts protected values under the active data key, opens them under any."""

    def __init__(self, ring: KeyRing, is_identity: IsIdentitySystem) -> None:
        self.ring = ring
        self.is_identity = is_identity

    @staticmethod
    def _aad(kid: str, system: Any, owner: str) -> bytes:
        return (f"fhirserver/field/v{VERSION}|{kid}|{owner}|"
                f"{system if isinstance(system, str) else ''}").encode()

    def encrypt(self, value: str, system: Any, kid: str | None = None,
                owner: str = "") -> dict[str, str]:
        """``value`` encrypted for the element of ``system`` in the document
        ``owner`` names (associated data)."""
        kid, key = (kid, self.ring.key(kid)) if kid else self.ring.active()
        nonce = os.urandom(NONCE_BYTES)
        ct = AESGCM(key).encrypt(nonce, value.encode(), self._aad(kid, system, owner))
        return {ENCRYPTED: f"{VERSION}.{kid}.{_b64(nonce + ct)}"}

    def decrypt(self, sealed: dict[str, Any], system: Any, owner: str = "") -> str:
        try:
            version, kid, body = str(sealed[ENCRYPTED]).split(".", 2)
            raw = _unb64(body)
        except (KeyError, ValueError) as exc:
            raise SealError("an encrypted value is malformed") from exc
        if version != VERSION:
            raise SealError(f"an encrypted value has unknown format version {version!r}")
        try:
            plain = AESGCM(self.ring.key(kid)).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                                      self._aad(kid, system, owner))
        except (InvalidTag, ValueError) as exc:
            raise SealError("an encrypted value does not open: it was altered or moved "
                            "to another element or document") from exc
        return plain.decode()

    @staticmethod
    def kid_of(sealed: dict[str, Any]) -> str:
        return str(sealed.get(ENCRYPTED, "")).split(".", 2)[1]

    def seal(self, resource: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The stored form of ``resource`` and the data key ids it uses ([] when
        nothing in it is protected: then it is ``resource`` itself). A narrative that
        shows a protected value is encrypted whole."""
        if not protected_nodes(resource, self.is_identity):
            return resource, []
        copy: dict[str, Any] = _copy(resource)
        kid, _ = self.ring.active()
        owner = _owner(resource)
        found = protected_nodes(copy, self.is_identity)
        plain = [n["value"] for n, _ in found if isinstance(n.get("value"), str)]
        texts = narratives_showing(copy, plain)
        for text in texts:
            text["div"] = self.encrypt(text["div"], NARRATIVE, kid, owner)
        used = bool(texts)
        for node, _kind in found:
            value = node.get("value")
            if isinstance(value, str):
                node["value"] = self.encrypt(value, node.get("system"), kid, owner)
                used = True
        return copy, [kid] if used else []

    def open(self, stored: dict[str, Any]) -> dict[str, Any]:
        """The resource a stored form holds, every encrypted value decrypted (a copy:
        ``stored`` is left as it is, and is the answer when nothing in it is)."""
        if not _may_be_sealed(stored):
            return stored
        opened: dict[str, Any] = _copy(stored)
        sealed = self._sealed_nodes(opened)
        if not sealed:
            return stored
        owner = _owner(stored)
        for node, field in sealed:
            node[field] = self.decrypt(node[field], _system(node, field), owner)
        return opened

    def reseal(self, stored: dict[str, Any], kid: str) -> bool:
        """Re-encrypt, in place, every value not under data key ``kid``; True if any was."""
        changed = False
        owner = _owner(stored)
        for node, field in self._sealed_nodes(stored):
            if self.kid_of(node[field]) != kid:
                plain = self.decrypt(node[field], _system(node, field), owner)
                node[field] = self.encrypt(plain, _system(node, field), kid, owner)
                changed = True
        return changed

    @staticmethod
    def _sealed_nodes(stored: Any) -> list[tuple[Node, str]]:
        """(element, field) of every encrypted value (an Identifier's or
        ContactPoint's ``value``, a Narrative's ``div``), wherever it is: the registry
        may have changed since they were written, and what was encrypted opens."""
        return [(node, field) for node in _dicts(stored) for field in _ENCRYPTED_FIELDS
                if isinstance(node.get(field), dict) and ENCRYPTED in node[field]]


_ENCRYPTED_FIELDS = ("value", "div")
#: An encrypted value's key as the JSON text of its document shows it.
_SEALED_KEY = orjson.dumps(ENCRYPTED) + b":"


def _may_be_sealed(stored: Any) -> bool:
    """False when ``stored`` holds no encrypted value (most records: an Observation
    holds no identity number), told by one pass of the C serializer instead of a
    walk of every element; True when it may, or when that cannot tell."""
    try:
        return _SEALED_KEY in orjson.dumps(stored)
    except TypeError:  # orjson.JSONEncodeError too: not plain JSON, so look
        return True


def _system(node: Node, field: str) -> Any:
    """What an encrypted field is bound to besides its document: an element's system,
    or the narrative."""
    return NARRATIVE if field == "div" else node.get("system")
