"""PII and secret detectors: e-mail, phone, credit card (Luhn), IP, IBAN (mod 97), API keys/tokens.

`scan(text)` finds them; `redact(text)` replaces each with a typed placeholder such as `[EMAIL]`.
Detectors with a checksum (cards, IBANs) only count matches whose checksum holds, so an order
number that merely looks like a card number is left alone.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from schemas.curation_policy import PII_TYPES, PiiType

PLACEHOLDER: dict[PiiType, str] = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "credit_card": "[CREDIT_CARD]",
    "ip_address": "[IP_ADDRESS]",
    "iban": "[IBAN]",
    "secret": "[SECRET]",
}

_SECRET = re.compile(
    r"(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,}"  # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{22,}"
    r"|sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI / Anthropic style keys
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWT
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
    r"|(?i:(?<=api[_-]key[=:] )|(?<=token[=:] )|(?<=secret[=:] )|(?<=password[=:] ))[^\s'\"]{8,}"
    r"|(?i:(?<=api[_-]key=)|(?<=token=)|(?<=secret=)|(?<=password=))[^\s'\"&]{8,}"
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{1,4}(?![0-9A-Fa-f:])")
_PHONE = re.compile(
    r"(?<!\d[ .-])(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])"
    r"\d{3,4}[ .-]\d{3,4}(?![\w])(?![ .-]\d)"
    r"|(?<![\w+])\+\d{7,14}(?!\w)"
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(numeric) % 97 == 1


def _card(match: re.Match[str]) -> bool:
    digits = re.sub(r"\D", "", match.group())
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _ip(match: re.Match[str]) -> bool:
    try:
        ipaddress.ip_address(match.group())
    except ValueError:
        return False
    return True


def _always(_: re.Match[str]) -> bool:
    return True


@dataclass(frozen=True)
class Detector:
    kind: PiiType
    patterns: tuple[re.Pattern[str], ...]
    valid: Callable[[re.Match[str]], bool] = _always


# order matters: secrets and e-mails first, so their digits are not re-read as phones or cards
DETECTORS: tuple[Detector, ...] = (
    Detector("secret", (_SECRET,)),
    Detector("email", (_EMAIL,)),
    Detector("iban", (_IBAN,), lambda m: iban_ok(m.group())),
    Detector("credit_card", (_CARD,), _card),
    Detector("ip_address", (_IPV4, _IPV6), _ip),
    Detector("phone", (_PHONE,)),
)
assert {d.kind for d in DETECTORS} == set(PII_TYPES)


def redact(text: str, kinds: Iterable[PiiType] = PII_TYPES) -> tuple[str, Counter[str]]:
    """The text with every detected item replaced by its placeholder, and counts per type."""
    wanted = set(kinds)
    counts: Counter[str] = Counter()
    for detector in DETECTORS:
        if detector.kind not in wanted:
            continue
        for pattern in detector.patterns:

            def replace(match: re.Match[str], detector: Detector = detector) -> str:
                if not detector.valid(match):
                    return match.group()
                counts[detector.kind] += 1
                return PLACEHOLDER[detector.kind]

            text = pattern.sub(replace, text)
    return text, counts


def scan(text: str, kinds: Iterable[PiiType] = PII_TYPES) -> Counter[str]:
    return redact(text, kinds)[1]
