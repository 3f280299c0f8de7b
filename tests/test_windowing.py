"""The labelling rule training and adaptation share: which keyword a window of running speech is."""

from triage.features import FeatureParams
from triage.keywords import UNKNOWN
from triage.windowing import window_label

L = FeatureParams().window_samples / 16000


def test_a_window_is_the_keyword_only_when_it_holds_all_of_it():
    words = [("gaz", 1.0, 1.3)]
    assert window_label(0.4, L, words) == "gaz"  # [0.4, 1.38] holds it all
    assert window_label(0.5, L, words) == "gaz"
    assert window_label(1.1, L, words) is None  # two thirds of it: masked
    assert window_label(1.28, L, words) == UNKNOWN  # a sliver
    assert window_label(-0.8, L, words) == UNKNOWN  # ends before it


def test_a_keyword_longer_than_the_window_is_named_when_it_fills_the_window():
    words = [("électrocution", 1.0, 2.2)]
    assert window_label(1.1, L, words) == "électrocution"
    assert window_label(0.5, L, words) is None


def test_two_whole_keywords_in_one_window_are_masked():
    assert window_label(0.0, L, [("gaz", 0.1, 0.3), ("vol", 0.5, 0.7)]) is None
