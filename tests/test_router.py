from triage.router import CallRouter
from triage.spotter import Detection


def det(kw, service, t, c=0.9):
    return Detection(kw, service, t, c)


def test_first_keyword_routes_and_says_it_changed():
    r = CallRouter()
    assert r.update([]) is None
    d = r.update([det("incendie", 18, 3.2)])
    assert d.services == (18,) and d.version == 1 and d.changed_at == 3.2
    assert d.first_time(18) == 3.2 and d.keywords == {18: ["incendie"]}


def test_more_evidence_for_the_same_service_is_not_a_change():
    r = CallRouter()
    r.update([det("incendie", 18, 3.2, 0.7)])
    assert r.update([det("gaz", 18, 5.0, 0.95)]) is None
    assert r.decision.version == 1 and r.decision.confidence(18) == 0.95
    assert r.decision.keywords == {18: ["gaz", "incendie"]}


def test_two_services_in_order_of_first_evidence():
    r = CallRouter()
    r.update([det("incendie", 18, 3.0)])
    d = r.update([det("malaise", 15, 6.0)])
    assert d.services == (18, 15) and d.version == 2 and d.changed_at == 6.0
    assert r.sorted_services == [15, 18]


def test_detections_in_one_update_are_ordered_by_time():
    r = CallRouter()
    d = r.update([det("vol", 17, 9.0), det("malaise", 15, 2.0)])
    assert d.services == (15, 17) and d.changed_at == 2.0 and d.version == 1


def test_decision_serialises():
    r = CallRouter()
    r.update([det("vol", 17, 9.0, 0.81234)])
    assert r.decision.to_dict() == {"services": [17], "version": 1, "changed_at": 9.0,
                                    "evidence": {"17": [{"keyword": "vol", "time": 9.0, "confidence": 0.8123}]}}
