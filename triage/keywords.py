"""The keyword → emergency service table. Nothing else in triage or training defines it."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Service:
    number: int
    name: str  # what a French dispatcher calls it
    description: str


SERVICES: tuple[Service, ...] = (
    Service(15, "SAMU", "urgence médicale"),
    Service(17, "Police", "police secours"),
    Service(18, "Pompiers", "sapeurs-pompiers"),
)

# Order matters: it is the class order of every model trained by `training/` (after the
# keywords come the two non-keyword classes below).
KEYWORD_SERVICE = MappingProxyType(
    {
        "malaise": 15,
        "hémorragie": 15,
        "brûlure": 15,
        "intoxication": 15,
        "violences": 17,
        "agression": 17,
        "vol": 17,
        "cambriolage": 17,
        "incendie": 18,
        "gaz": 18,
        "effondrement": 18,
        "électrocution": 18,
    }
)

KEYWORDS: tuple[str, ...] = tuple(KEYWORD_SERVICE)
UNKNOWN = "_unknown_"
SILENCE = "_silence_"
CLASSES: tuple[str, ...] = (*KEYWORDS, UNKNOWN, SILENCE)

SERVICE_BY_NUMBER = MappingProxyType({s.number: s for s in SERVICES})


def service_of(keyword: str) -> int:
    """Service number for a keyword; KeyError names the keyword if it is not one of the 12."""
    try:
        return KEYWORD_SERVICE[keyword]
    except KeyError:
        raise KeyError(f"{keyword!r} is not a triage keyword (expected one of {', '.join(KEYWORDS)})") from None
