"""How training/alignment.py compares Whisper's words with a keyword: one folding, corpus.folded's."""

from training.alignment import fold
from training.corpus import folded


def test_a_transcribed_word_folds_to_the_keyword_it_is():
    assert fold(" Électrocution,") == "electrocution" == folded("électrocution")
    assert fold("HÉMORRAGIE!") == fold("hémorragie") == "hemorragie"
    assert fold("brûlure.") == "brulure"
    assert fold("l'incendie") == "lincendie"  # letters only: an elided article stays attached
