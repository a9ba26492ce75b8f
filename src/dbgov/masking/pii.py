"""PII detectors for free text: where personal data sits inside a string.

Theory of operation. Each detector is a candidate regex plus a validator: SSA ranges
for SSNs, Luhn and issuer ranges for cards, mod-97 and country lengths for IBANs,
octet ranges for IPv4, `ipaddress` for IPv6, a JSON header with "alg" for JWTs, an
entropy floor for secrets assigned to key-like names. `find_spans` merges what the
detectors report into the leftmost-longest non-overlapping set; on equal spans the
detector listed first in `DETECTOR_TYPES` wins.

Speed. Most texts hold no PII, and Python's `re` is only fast when a pattern starts
with a literal or a character class (it then skips positions in C). So:
- numeric detectors (phone, ssn, card, ipv4) run only inside "numeric clusters",
  found with one scan: digits with the separators ``space . - ( ) +`` between them,
  at least 7 characters long. "in 2024" or "$12.50" never reach a detector;
- the others first check a cheap fact ('@' for email, "eyJ" for JWT, a key prefix,
  a key-like word plus a digit, "::" for IPv6) and their patterns start with a
  literal or a class; where a leading lookbehind would defeat that, the boundary is
  checked in Python on the one character before a match;
- every quantifier is bounded or possessive, so hostile texts (a million "1 " or
  "a.a.a.") stay linear: these texts come from the database, not from us.
Measured with CPython 3.11 on the shared 2-core development machine, ~200-character
texts, `find_spans`: 300-450 k texts/s without digits, 100-160 k with digits but no
PII, 50-70 k with one PII span (the ranges are run-to-run load).

Matching is ASCII for digits and separators (`[0-9]`, never `\\d`: Arabic-Indic or
full-width digits are not read as numbers). Letters of any script may touch a span
("电话 415-555-0199", "卡号4111111111111111"); ASCII letters glued to digits make an
id ("ORD4111111111111111"), not PII. Emails allow Unicode local parts and domains.

Detection is best-effort and leans to over-masking where leaking is the alternative.

Known false negatives (PII that is missed):
- anything without a fixed shape: person names, street addresses, dates of birth
  (there is no named-entity recognition here), unless the database holds them:
  `known` values (known.py) are found wherever they appear.
- email: no dot in the domain (``root@localhost``), quoted local parts, obfuscation
  (``bob at example dot com``), local parts longer than 64 characters (only their
  last 64 characters are masked).
- phone: NANP numbers without separators (``4155550199``) unless in E.164 form
  (``+14155550199``); international numbers without a leading ``+``
  (``020 7946 0958``); NANP area or exchange codes starting with 0 or 1; 7-digit
  local numbers (``555-0199``).
- ssn: SSNs without dashes (``123456789``, ``123 45 6789``).
- card: issuers outside the IIN ranges in `_iin_ok` (UATP cards start with 1);
  groups split by anything but single spaces or dashes (``4111.1111...``);
  numbers joined by commas with no space; groups (but the last) of 1-2 digits.
- iban: lower-case IBANs; countries missing from `_IBAN_LENGTHS`; separators other
  than single spaces.
- ipv4/ipv6: IPv6 addresses with fewer than 3 hex digits (``::1``, not personal);
  addresses glued to an ASCII letter.
- api_key: secrets with an unknown prefix not written as ``key=...``/``token: ...``;
  assigned values shorter than 16 characters, all letters, or of low entropy
  (``password: hunter2``); AWS secret keys unless assigned to a key-like name;
  names glued to a lower-case word (``myapikey=...``; camelCase ``accessToken`` is
  found).

Known false positives (non-PII that is masked):
- phone: codes shaped like NANP numbers (``SKU 415-555-0199``); ``+`` followed by
  8-15 digits in groups (``+20 30 40 50``); a number group after an international
  number is absorbed while the total stays within 15 digits.
- card: about 1 in 10 numeric ids of 13-19 digits starting with 2-6 pass Luhn.
- ipv4: four-part version strings without a ``v`` prefix (``version 1.2.3.4``).
- ipv6: hex words joined by ``::`` (``abc::def`` in C++ text).
- email: file names with an ``@`` and a letter extension (``icon@2x.png``).
- api_key: high-entropy paths or ids assigned to a name ending in key/token/secret.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from dbgov.masking.known import KnownValues

__all__ = ["DETECTOR_TYPES", "Span", "find_spans", "redact_text"]


@dataclass(frozen=True, slots=True)
class Span:
    """A detected piece of PII: `text[start:end]` is of kind `type`."""

    type: str
    start: int
    end: int
    value: str | None = None  # a known value (known.py): the column's value as stored

    @property
    def label(self) -> str:
        """The upper-case tag used in replacements, e.g. "EMAIL"."""
        return self.type.upper()


_Found = Iterator[tuple[int, int]]


def _is_ascii_word(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


# ---------------------------------------------------------------------------
# Numeric clusters: the only places where phone, ssn, card and ipv4 can be.

_CLUSTER = re.compile(r"[0-9][0-9 .\-()+]{5,}+")  # 6+ characters from a digit
_MARGIN = 2  # lookaheads below read at most two characters past a cluster


def _clusters(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each numeric cluster long enough for a detector."""
    for m in _CLUSTER.finditer(text):
        start, end = m.span()
        # A phone may open with "+", "(" or "(+" before its first digit.
        while start > 0 and text[start - 1] in "+(" and m.start() - start < 2:
            start -= 1
        if end - start >= 7:  # "1.2.3.4"; an SSN needs 11, a phone 9, a card 13
            yield start, end


# ---------------------------------------------------------------------------
# phone

# NANP: area and exchange codes start with 2-9; separators are required between the
# groups so that bare 10-digit ids are not taken for phones.
# International: a leading "+" is required (E.164 style), then 8-15 digits in groups,
# optionally with a parenthesized trunk prefix: "+44 (0)20 7946 0958".
_PHONE = re.compile(
    r"(?<![A-Za-z0-9_+\-./])"
    r"(?:"
    r"(?P<nanp>(?:\+?1[-. ]?)?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[-. ])[2-9][0-9]{2}[-. ][0-9]{4})"
    r"|(?P<intl>\+[1-9][0-9]{0,3}\)?(?:[-. ]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){1,7})"
    r")"
    r"(?![A-Za-z0-9_\-])(?![.,/][0-9])"
)
_PHONE_SEPS = frozenset("-. (")
_TRUNK = "(0)"


def _intl_digits_ok(candidate: str) -> bool:
    digits = sum(c.isdigit() for c in candidate.replace(_TRUNK, "", 1))
    return 8 <= digits <= 15


def _find_phone(text: str, pos: int, endpos: int) -> _Found:
    for m in _PHONE.finditer(text, pos, endpos):
        if m.group("nanp") is not None:
            yield m.span()
            continue
        # Greedy groups may swallow a following number: cut before a separator,
        # longest first, until the digit count fits E.164.
        start = m.start()
        candidate = m.group()
        cuts = [i for i in range(len(candidate) - 1, 1, -1) if candidate[i] in _PHONE_SEPS]
        for cut in [len(candidate), *cuts]:
            if _intl_digits_ok(candidate[:cut]):
                yield start, start + cut
                break


# ---------------------------------------------------------------------------
# ssn

_SSN = re.compile(
    r"(?<![A-Za-z0-9_\-.])([0-9]{3})-([0-9]{2})-([0-9]{4})(?![A-Za-z0-9_\-])(?!\.[0-9])"
)


def _find_ssn(text: str, pos: int, endpos: int) -> _Found:
    for m in _SSN.finditer(text, pos, endpos):
        area, group, serial = m.group(1, 2, 3)
        # SSA: areas 000, 666 and 900-999, group 00 and serial 0000 are never issued.
        if area == "000" or area == "666" or area[0] == "9":
            continue
        if group == "00" or serial == "0000":
            continue
        yield m.span()


# ---------------------------------------------------------------------------
# card

# A maximal run of digit groups joined by single spaces or dashes; a card is a window
# of whole groups inside it. Possessive and without lookarounds, so a hostile
# "1 1 1 ... x" stays linear; the run's neighbours are checked in Python.
_DIGIT_RUN = re.compile(r"[0-9]++(?:[ \-][0-9]++)*+")
_RUN_GROUP = re.compile(r"[0-9]++")


def _luhn_ok(digits: str) -> bool:
    total = 0
    double = False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if double:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        double = not double
    return total % 10 == 0


def _iin_ok(digits: str) -> bool:
    """Issuer ranges: Visa 4; Mastercard 51-55, 2221-2720; Maestro 50, 56-69;
    Amex 34, 37; JCB 35; Diners 30, 36, 38, 39; Discover and UnionPay 6."""
    first = digits[0]
    if first in "456":
        return True
    if first == "3":
        return digits[1] in "0456789"
    if first == "2":
        return 2221 <= int(digits[:4]) <= 2720
    return False


def _glued_before(text: str, start: int) -> bool:
    """True if a number at `start` continues an ASCII word, a code or a decimal."""
    if start == 0:
        return False
    prev = text[start - 1]
    if _is_ascii_word(prev) or prev in "-+":
        return True
    return prev in ".," and start >= 2 and text[start - 2].isdigit()


def _glued_after(text: str, end: int) -> bool:
    if end == len(text):
        return False
    nxt = text[end]
    if _is_ascii_word(nxt) or nxt == "-":
        return True
    return nxt in ".," and end + 1 < len(text) and text[end + 1].isdigit()


def _card_windows(text: str, start: int, end: int) -> _Found:
    groups = [g.span() for g in _RUN_GROUP.finditer(text, start, end)]
    if _glued_before(text, start):
        groups.pop(0)
    if groups and _glued_after(text, end):
        groups.pop()
    i, n = 0, len(groups)
    while i < n:
        # Windows of whole groups starting at group i, longest first. A card has at
        # most 19 digits, so at most 19 groups: linear in the run's length.
        windows: list[tuple[int, str]] = []
        digits = ""
        for j in range(i, n):
            a, b = groups[j]
            digits += text[a:b]
            if len(digits) > 19:
                break
            if len(digits) >= 13:
                windows.append((j, digits))
            if b - a < 3:
                # A group of 1-2 digits can only end a card (4-4-4-1); inside one it
                # is a date or a numbering, not card formatting (4-4-4-4, 4-6-5).
                break
        for j, candidate in reversed(windows):
            if _iin_ok(candidate) and _luhn_ok(candidate):
                yield groups[i][0], groups[j][1]
                i = j
                break
        i += 1


def _find_card(text: str, pos: int, endpos: int) -> _Found:
    for m in _DIGIT_RUN.finditer(text, pos, endpos):
        start, end = m.span()
        if end - start >= 13:
            yield from _card_windows(text, start, end)


# ---------------------------------------------------------------------------
# ipv4

_IPV4 = re.compile(
    r"(?<![A-Za-z0-9_.])[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![A-Za-z0-9_])(?!\.[0-9])"
)


def _find_ipv4(text: str, pos: int, endpos: int) -> _Found:
    for m in _IPV4.finditer(text, pos, endpos):
        if all(int(octet) <= 255 for octet in m.group().split(".")):
            yield m.span()


# ---------------------------------------------------------------------------
# email

# Anchored on each '@': the domain is matched forwards, the local part backwards (on
# the reversed text), so the cost is per address, not per character of the text.
# Unicode word characters are allowed (RFC 6531); text in another script glued to an
# address widens the span, which over-masks rather than leaks.
_EMAIL_LOCAL_REVERSED = re.compile(r"[\w%+\-](?:[\w.%+\-]{0,62}[\w%+\-])?")
_EMAIL_DOMAIN = re.compile(
    r"(?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.){1,10}[^\W\d_]{2,63}(?![\w\-]|\.[^\W_])"
)


def _find_email(text: str) -> _Found:
    at = text.find("@")
    reversed_text = text[::-1]
    n = len(text)
    while at >= 0:
        domain = _EMAIL_DOMAIN.match(text, at + 1)
        if domain is not None:
            local = _EMAIL_LOCAL_REVERSED.match(reversed_text, n - at)
            if local is not None:
                yield at - (local.end() - local.start()), domain.end()
        at = text.find("@", at + 1)


# ---------------------------------------------------------------------------
# iban

# IBAN lengths by country, from the SWIFT IBAN registry.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

_IBAN = re.compile(r"[A-Z][A-Z][0-9][0-9](?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")


def _iban_ok(compact: str) -> bool:
    # ISO 13616: move the first four characters to the end, read letters as 10..35;
    # the number mod 97 must be 1.
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _iban_cut(candidate: str, length: int) -> int:
    """Where the country's `length` ends in `candidate` (spaces skipped), or -1 if
    that is not between two groups (a following word is not account number)."""
    kept = 0
    for i, ch in enumerate(candidate):
        if ch != " ":
            kept += 1
            if kept == length:
                cut = i + 1
                return cut if cut == len(candidate) or candidate[cut] == " " else -1
    return -1


def _find_iban(text: str) -> _Found:
    pos = 0
    while (m := _IBAN.search(text, pos)) is not None:
        start = m.start()
        pos = start + 1
        if start and _is_ascii_word(text[start - 1]):
            continue
        length = _IBAN_LENGTHS.get(text[start : start + 2])
        if length is None:
            continue
        cut = _iban_cut(m.group(), length)
        if cut > 0 and _iban_ok(text[start : start + cut].replace(" ", "")):
            yield start, start + cut
            pos = start + cut


# ---------------------------------------------------------------------------
# ipv6

_IPV6 = re.compile(
    r"(?<![A-Za-z0-9_:.])"
    r"(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{1,4})?"
    r"(?:%[0-9A-Za-z_.\-]{1,32})?"
    r"(?![A-Za-z0-9_.])"
)
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _ipv6_ok(candidate: str) -> bool:
    if sum(c in _HEX_DIGITS for c in candidate.partition("%")[0]) < 3:
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _find_ipv6(text: str) -> _Found:
    for m in _IPV6.finditer(text):
        start, end = m.span()
        candidate = m.group()
        if _ipv6_ok(candidate):
            yield start, end
        elif candidate[-1] == ":" and candidate[-2] != ":" and _ipv6_ok(candidate[:-1]):
            yield start, end - 1  # "fe80::1: unreachable": the colon is punctuation


# ---------------------------------------------------------------------------
# api_key

# Each alternative starts with a literal, so the scan skips in C.
_PREFIXED_KEY = re.compile(
    r"(?:sk-[A-Za-z0-9_\-]{20,}+"  # OpenAI, Anthropic (sk-proj-..., sk-ant-...)
    r"|sk_(?:live|test)_[A-Za-z0-9]{16,}+"  # Stripe secret keys
    r"|rk_(?:live|test)_[A-Za-z0-9]{16,}+"  # Stripe restricted keys
    r"|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}"  # AWS access key ids
    r"|gh[pousr]_[A-Za-z0-9]{36,}+"  # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{22,}+"  # GitHub fine-grained tokens
    r"|xox[bpars]-[A-Za-z0-9\-]{10,}+"  # Slack tokens
    r"|AIza[0-9A-Za-z_\-]{35})"  # Google API keys
    r"(?![A-Za-z0-9_\-])"
)

# A secret assigned to a key-like name: `api_key=...`, `"accessToken": "..."`,
# `Authorization: Bearer ...`. Only the value is reported, so the name stays readable.
_KEY_NAME = re.compile(r"api[_\-]?key|key|secret|token|passw(?:or)?d|pwd|bearer")
_KEY_NAME_ANY_CASE = re.compile(_KEY_NAME.pattern, re.IGNORECASE)
_ASSIGNED_VALUE = re.compile(
    r"[\"']?[ \t]{0,8}(?::|=>?)[ \t]{0,8}[\"']?(?:[Bb]earer[ \t]{1,8})?"
    r"([A-Za-z0-9_\-/+=~.]{16,}+)"
)
_BEARER_VALUE = re.compile(r"[ \t]{1,8}([A-Za-z0-9_\-/+=~.]{16,}+)")
_MIN_ENTROPY = 3.0  # bits per character: English words score below, random ids above


def _entropy(s: str) -> float:
    n = len(s)
    counts: dict[str, int] = {}
    for ch in s:
        counts[ch] = counts.get(ch, 0) + 1
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _secret_ok(value: str) -> bool:
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    return has_digit and has_alpha and _entropy(value) >= _MIN_ENTROPY


def _key_name_starts_word(text: str, start: int) -> bool:
    """True where a key-like name starts a word: "key" in "api_key", "Token" in
    camelCase "accessToken"; not "key" in "monkey"."""
    if start == 0:
        return True
    prev = text[start - 1]
    if not _is_ascii_word(prev) or prev == "_":
        return True
    return text[start].isupper() and not prev.isupper()


def _find_assigned(text: str) -> _Found:
    lowered = text.lower()
    if not (
        "key" in lowered
        or "token" in lowered
        or "secret" in lowered
        or "passw" in lowered
        or "pwd" in lowered
        or "bearer" in lowered
    ):
        return
    # Search the lowered text (a literal-led pattern, fast) when lowering kept every
    # offset; a few characters (e.g. "İ") lower to two, and then the slow way.
    if len(lowered) == len(text):
        names = _KEY_NAME.finditer(lowered)
    else:
        names = _KEY_NAME_ANY_CASE.finditer(text)
    value_end = 0
    for name in names:
        start, end = name.span()
        if start < value_end or not _key_name_starts_word(text, start):
            continue  # a name inside the previous value is part of that value
        rest = (_BEARER_VALUE if name.group() == "bearer" else _ASSIGNED_VALUE).match(text, end)
        if rest is None:
            continue
        value_end = rest.end()
        value = rest.group(1).rstrip(".")
        if len(value) >= 16 and _secret_ok(value):
            yield rest.start(1), rest.start(1) + len(value)


def _has_key_prefix(text: str) -> bool:
    # Every prefix in _PREFIXED_KEY contains one of these.
    return (
        "_" in text or "sk-" in text or "AKIA" in text or "ASIA" in text
        or "xox" in text or "AIza" in text
    )  # fmt: skip


def _looks_random(body: str) -> bool:
    """A generated key has a digit or mixed case; a hyphenated phrase has neither."""
    if any(c.isdigit() for c in body):
        return True
    return any(c.isupper() for c in body) and any(c.islower() for c in body)


def _find_prefixed_key(text: str) -> _Found:
    pos = 0
    while (m := _PREFIXED_KEY.search(text, pos)) is not None:
        start, end = m.span()
        # Whether yielded or not, nothing inside the match can start a key: it would
        # be glued to the characters before it. Skipping it keeps the scan linear.
        pos = end
        if start and (_is_ascii_word(text[start - 1]) or text[start - 1] == "-"):
            continue
        if text.startswith("sk-", start) and not _looks_random(text[start + 3 : end]):
            continue  # "sk-this-is-not-a-real-key"
        yield start, end


# ---------------------------------------------------------------------------
# jwt

# A JWS in compact form: base64url header "eyJ..." (`{"`), payload, signature (empty
# for alg "none"); a JWE has five parts. The pattern takes the whole run of token
# characters (possessive: one pass, no retries at each "eyJ" inside it) and Python
# splits it.
_JWT_RUN = re.compile(r"eyJ[A-Za-z0-9_\-.]*+")


def _jwt_header_ok(header: str) -> bool:
    try:
        parsed = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(parsed, dict) and "alg" in parsed


def _find_jwt(text: str) -> _Found:
    for m in _JWT_RUN.finditer(text):
        start, end = m.span()
        if start and (_is_ascii_word(text[start - 1]) or text[start - 1] in "-."):
            continue
        parts = m.group().split(".")
        if len(parts) in (4, 6) and parts[-1] == "":
            parts.pop()  # the full stop of a sentence
            end -= 1
        if len(parts) in (3, 5) and parts[1] and _jwt_header_ok(parts[0]):
            yield start, end


# ---------------------------------------------------------------------------

# The order of DETECTOR_TYPES is priority on equal spans: a JWT assigned to `token:`
# is reported as a JWT.
DETECTOR_TYPES: tuple[str, ...] = (
    "jwt", "api_key", "email", "iban", "card", "ssn", "phone", "ipv6", "ipv4",
)  # fmt: skip
_ALL_TYPES = frozenset(DETECTOR_TYPES)
_PRIORITY = {name: i for i, name in enumerate(DETECTOR_TYPES)}


def _has_digit(text: str) -> bool:
    # Ten substring tests beat one `[0-9]` regex scan several times over.
    return (
        "0" in text or "1" in text or "2" in text or "3" in text or "4" in text
        or "5" in text or "6" in text or "7" in text or "8" in text or "9" in text
    )  # fmt: skip


def _check_types(types: frozenset[str] | None) -> frozenset[str]:
    if types is None:
        return _ALL_TYPES
    unknown = types - _ALL_TYPES
    if unknown:
        raise ValueError(f"unknown PII types {sorted(unknown)}; known: {list(DETECTOR_TYPES)}")
    return types


_Candidate = tuple[int, int, int, str, str | None]  # start, -end, priority, type, value


def _detect(text: str, wanted: frozenset[str], known: KnownValues | None) -> list[_Candidate]:
    """Every validated candidate as (start, -end, priority, type, value), unsorted.

    Each detector runs only when its cheap pre-check passes; the detectors assume it.
    Numeric detectors run per cluster, and only on clusters of their shape. Known
    values come first on equal spans: their label says more than a shape's.
    """
    found: list[_Candidate] = []
    if known is not None:
        for start, end, label, value in known.find(text):
            found.append((start, -end, -1, label.lower(), value))

    def add(name: str, spans: _Found) -> None:
        prio = _PRIORITY[name]
        for start, end in spans:
            found.append((start, -end, prio, name, None))

    has_digit = _has_digit(text)
    if "jwt" in wanted and "eyJ" in text:
        add("jwt", _find_jwt(text))
    if "api_key" in wanted:
        if _has_key_prefix(text):
            add("api_key", _find_prefixed_key(text))
        if has_digit:  # assigned secrets must contain a digit
            add("api_key", _find_assigned(text))
    if "email" in wanted and "@" in text:
        add("email", _find_email(text))
    if "ipv6" in wanted and ("::" in text or text.count(":") >= 7):
        add("ipv6", _find_ipv6(text))  # compressed forms have "::", full ones 7 colons
    if not has_digit:
        return found
    if "iban" in wanted:
        add("iban", _find_iban(text))
    card = "card" in wanted
    ssn = "ssn" in wanted
    phone = "phone" in wanted
    ipv4 = "ipv4" in wanted
    if not (card or ssn or phone or ipv4):
        return found
    n = len(text)
    for pos, end in _clusters(text):
        endpos = min(n, end + _MARGIN)
        size = end - pos
        chunk = text[pos:end]
        if card and size >= 13:
            add("card", _find_card(text, pos, endpos))
        if ssn and size >= 11 and chunk.count("-") >= 2:
            add("ssn", _find_ssn(text, pos, endpos))
        if phone and size >= 9:
            add("phone", _find_phone(text, pos, endpos))
        if ipv4 and chunk.count(".") >= 3:
            add("ipv4", _find_ipv4(text, pos, endpos))
    return found


def _order(candidate: _Candidate) -> tuple[int, int, int, str]:
    return candidate[:4]


def find_spans(
    text: str, types: frozenset[str] | None = None, known: KnownValues | None = None
) -> list[Span]:
    """The PII spans in `text`, sorted, non-overlapping, leftmost-longest.

    `types` restricts detection to a subset of `DETECTOR_TYPES` (None means all);
    `known` adds the values of masked columns (known.py), each typed by its label.
    """
    found = _detect(text, _check_types(types), known)
    if not found:
        return []
    found.sort(key=_order)
    spans: list[Span] = []
    last_end = 0
    for start, neg_end, _, name, value in found:
        if start >= last_end:
            spans.append(Span(name, start, -neg_end, value))
            last_end = -neg_end
    return spans


def redact_text(
    text: str,
    types: frozenset[str] | None,
    replace: Callable[[Span, str], str],
    known: KnownValues | None = None,
) -> str:
    """`text` with each PII span replaced by `replace(span, span_text)`.

    Returns `text` itself (the same object) when nothing is found, so a caller can
    test identity and skip re-encoding.
    """
    spans = find_spans(text, types, known)
    if not spans:
        return text
    parts: list[str] = []
    pos = 0
    for span in spans:
        parts.append(text[pos : span.start])
        parts.append(replace(span, text[span.start : span.end]))
        pos = span.end
    parts.append(text[pos:])
    return "".join(parts)
