import pytest

from triage.keywords import CLASSES, KEYWORD_SERVICE, KEYWORDS, SERVICE_BY_NUMBER, service_of


def test_the_twelve_keywords_route_to_their_service():
    assert {k for k, s in KEYWORD_SERVICE.items() if s == 15} == {"malaise", "hémorragie", "brûlure", "intoxication"}
    assert {k for k, s in KEYWORD_SERVICE.items() if s == 17} == {"violences", "agression", "vol", "cambriolage"}
    assert {k for k, s in KEYWORD_SERVICE.items() if s == 18} == {"incendie", "gaz", "effondrement", "électrocution"}
    assert len(KEYWORDS) == 12 and CLASSES[-2:] == ("_unknown_", "_silence_")
    assert SERVICE_BY_NUMBER[18].name == "Pompiers"


def test_unknown_keyword_error_lists_the_real_ones():
    with pytest.raises(KeyError, match="malaise"):
        service_of("volume")
