"""Identity document numbers: normalisation and format checks (pure).

Each validator takes a value already stripped of spaces and upper-cased (so a
lower-case check character ``x`` reads as ``X``) and returns it, or raises
:class:`InvalidNumber` saying what is wrong. The registry (:mod:`.identifier_systems`)
names the validator of each identifier system.

* Resident identity card numbers follow GB 11643: 6-digit area code, 8-digit birth
  date, 3-digit sequence (odd male, even female), ISO 7064 MOD 11-2 check
  character (python-stdnum), and an area code from the administrative division
  table python-stdnum ships.
* Residence permits for Hong Kong, Macau and Taiwan residents use the same form
  with the area codes 810000, 820000 and 830000.
* The foreign permanent resident card: the 2017 form (3-letter nationality, 2-digit
  area, birth date YYMMDD, 4 digits) and the 2023 form (18 characters starting with
  9, birth date at positions 7-14, MOD 11-2 check).
* Travel permits and passports by their published formats; health card numbers are
  issued here: 20 digits, the last a Luhn check digit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

from stdnum import luhn, numdb
from stdnum.iso7064 import mod_11_2


class InvalidNumber(ValueError):
    """The number is not a valid number of its kind; the message says why."""


def normalise(value: str) -> str:
    """Spaces out, letters upper-case (``x`` check characters become ``X``)."""
    return re.sub(r"\s+", "", value).upper()


def gb11643_facts(number: str) -> tuple[date, str]:
    """Birth date and gender ("male"/"female") encoded in a GB 11643 number."""
    born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    return born, "male" if int(number[16]) % 2 else "female"


def _gb11643_form(number: str, what: str) -> None:
    if len(number) != 18:
        raise InvalidNumber(f"{what} must have 18 characters, not {len(number)}")
    if not number.isascii() or not number[:17].isdigit() or not (number[17].isdigit() or number[17] == "X"):
        raise InvalidNumber(f"{what} must be 17 digits and a check digit or X")
    try:
        born, _ = gb11643_facts(number)
    except ValueError as exc:
        raise InvalidNumber(f"{what} holds no valid birth date ({number[6:14]})") from exc
    if born > date.today():
        raise InvalidNumber(f"{what} holds a birth date in the future ({born.isoformat()})")
    if number[14:17] == "000":
        raise InvalidNumber(f"{what} has sequence number 000, which is never issued")
    if mod_11_2.calc_check_digit(number[:17]) != number[17]:
        raise InvalidNumber(f"{what} has a wrong check character (ISO 7064 MOD 11-2)")


def resident_id(number: str) -> str:
    what = "A resident identity card number"
    _gb11643_form(number, what)
    if number[:2] in ("81", "82", "83"):
        raise InvalidNumber(f"{what} cannot have area code {number[:6]}: that is a residence permit")
    if not _known_area(number[:6]):
        raise InvalidNumber(f"{what} has an unknown area code ({number[:6]})")
    return number


def _known_area(code: str) -> bool:
    """The area code is one python-stdnum's administrative division table has ever
    listed. Not only those current at the birth date (what ``cn.ric`` checks): the
    code is assigned where the number is issued, often decades after birth, so an
    elderly resident of a district created in 1985 has a valid number with it."""
    return any("county" in props for _part, props in numdb.get("cn/loc").info(code))


def _residence_permit(area: str, region: str) -> Callable[[str], str]:
    def check(number: str) -> str:
        what = f"A residence permit number for {region} residents"
        _gb11643_form(number, what)
        if number[:6] != area:
            raise InvalidNumber(f"{what} must start with area code {area}")
        return number
    return check


def foreign_permanent_resident(number: str) -> str:
    what = "A foreign permanent resident ID number"
    if len(number) == 15:
        if not re.fullmatch(r"[A-Z]{3}\d{12}", number):
            raise InvalidNumber(f"{what} of 15 characters must be 3 letters and 12 digits")
        try:
            date(2000 + int(number[5:7]), int(number[7:9]), int(number[9:11]))
        except ValueError as exc:
            raise InvalidNumber(f"{what} holds no valid birth date ({number[5:11]})") from exc
        return number
    if len(number) == 18 and number.startswith("9"):
        _gb11643_form(number, what)
        return number
    raise InvalidNumber(f"{what} must have 15 characters (2017 form) or 18 starting with 9 (2023 form)")


def travel_permit_hkmo(number: str) -> str:
    # 2012 form: H (Hong Kong) or M (Macau) and 8 digits; the older booklet added 2 digits.
    if not re.fullmatch(r"[HM]\d{8}(\d{2})?", number):
        raise InvalidNumber("A Mainland travel permit number for Hong Kong and Macau residents "
                            "must be H or M followed by 8 (or 10) digits")
    return number


def travel_permit_tw(number: str) -> str:
    # 2015 card: 8 digits; the older booklet: 10 digits, sometimes with a letter.
    if not re.fullmatch(r"\d{8}|\d{10}[A-Z]?", number):
        raise InvalidNumber("A Mainland travel permit number for Taiwan residents must have "
                            "8 digits (or 10 on the older booklet)")
    return number


def passport(number: str, country: str | None = None) -> str:
    if country == "CHN":
        # E + 8 digits, or E + a letter (not I or O) + 7 digits (ordinary e-passports);
        # G + 8 digits (older ordinary); D/S/P + 7-8 digits (diplomatic, service, public affairs).
        if not re.fullmatch(r"E\d{8}|E[A-HJ-NP-Z]\d{7}|G\d{8}|[DSP]E?\d{7,8}", number):
            raise InvalidNumber("A Chinese passport number must look like E12345678 or EA1234567")
        return number
    # ICAO 9303: the document number field holds up to 9 letters and digits.
    if not re.fullmatch(r"[A-Z0-9]{5,9}", number):
        raise InvalidNumber("A passport number must be 5 to 9 letters and digits (ICAO 9303)")
    return number


def health_card(number: str) -> str:
    if not re.fullmatch(r"\d{20}", number):
        raise InvalidNumber("A health card number must be 20 digits")
    if not luhn.is_valid(number):
        raise InvalidNumber("A health card number has a wrong check digit (Luhn)")
    return number


def hospital_record(number: str) -> str:
    if not re.fullmatch(r"[A-Z0-9][A-Z0-9\-]{0,31}", number):
        raise InvalidNumber("A hospital record number must be 1 to 32 letters, digits and dashes")
    return number


#: name in the registry -> validator(number, template parameter)
VALIDATORS: dict[str, Callable[[str, str | None], str]] = {
    "resident-id": lambda n, _: resident_id(n),
    "residence-permit-hk": lambda n, _: _residence_permit("810000", "Hong Kong")(n),
    "residence-permit-mo": lambda n, _: _residence_permit("820000", "Macau")(n),
    "residence-permit-tw": lambda n, _: _residence_permit("830000", "Taiwan")(n),
    "foreign-permanent-resident": lambda n, _: foreign_permanent_resident(n),
    "travel-permit-hkmo": lambda n, _: travel_permit_hkmo(n),
    "travel-permit-tw": lambda n, _: travel_permit_tw(n),
    "passport": passport,
    "health-card": lambda n, _: health_card(n),
    "hospital-record": lambda n, _: hospital_record(n),
}
#: validators whose numbers encode birth date and gender as GB 11643 does
GB11643 = frozenset({"resident-id", "residence-permit-hk", "residence-permit-mo",
                     "residence-permit-tw"})
