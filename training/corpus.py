"""What the voices say: keywords, near-miss and other words, sentences; and the real recordings used.

Everything here is plain data plus the functions that find installed recordings.
"""

from __future__ import annotations

import re
import subprocess
import unicodedata
from pathlib import Path

from triage.keywords import KEYWORDS

BASE_WORDS = ("no", "stop", "up", "right", "yes", "left", "go", "down")  # the English base model's classes

# Non-keywords. Near-misses first: words a caller says that sound like a keyword but must not route.
NEAR_MISSES = (
    "volet", "volume", "volant", "volaille", "volcan", "gazon", "gazelle", "incident", "agressif",
    "brûler", "malade", "malaisie", "violon", "violette", "effondré", "électricien", "intoxiqué",
    "hémisphère", "cambrousse", "incendié", "brume", "galerie", "agrafe", "malin", "électronique",
)
OTHER_WORDS = (
    "allô", "bonjour", "adresse", "maison", "voiture", "enfant", "fenêtre", "escalier", "voisin",
    "téléphone", "appartement", "étage", "secours", "vite", "respirer", "tombé", "blessé", "fumée",
    "accident", "docteur", "ambulance", "inconscient", "parking", "monsieur", "madame", "numéro",
    "porte", "bâtiment", "quartier", "cuisine", "rapidement", "attendez", "oui", "non", "merci",
    "pardon", "quarante", "deuxième", "ascenseur", "jardin",
)
UNKNOWN_WORDS = NEAR_MISSES + OTHER_WORDS  # what the voices say (synthesis)

# Inflected forms of keywords: a caller saying "incendié" needs the pompiers as much as one saying
# "incendie", and the two differ by one vowel. They are synthesized but never used as negatives.
KEYWORD_FORMS = frozenset({"incendié", "intoxiqué", "effondré"})

# French call sentences with no keyword (false-alarm measurement, call filler, `_unknown_` crops).
NO_KEYWORD_SENTENCES = (
    "Allô, bonjour, j'appelle pour ma voisine du troisième étage.",
    "Je suis au numéro douze de la rue Victor Hugo, au rez-de-chaussée.",
    "Il y a quelqu'un qui ne répond plus, je ne sais pas quoi faire.",
    "Mon fils est tombé dans l'escalier, il a mal à la jambe.",
    "Pouvez-vous envoyer quelqu'un rapidement s'il vous plaît ?",
    "Le volet de la fenêtre claque depuis ce matin avec le vent.",
    "Le volume de la télévision est beaucoup trop fort chez le voisin.",
    "Il a perdu le volant de sa voiture sur le parking.",
    "Ma grand-mère est malade depuis trois jours, elle tousse beaucoup.",
    "Nous sommes dans le jardin derrière la maison, près du portail.",
    "Je ne trouve plus mes clés et la porte est fermée.",
    "Le chien du voisin aboie toute la nuit, on n'arrive pas à dormir.",
    "Il y a eu un petit incident à l'école, rien de grave.",
    "L'ascenseur est bloqué entre deux étages depuis dix minutes.",
    "Je voudrais signaler une voiture garée devant la sortie.",
    "Elle a de la fièvre et elle ne veut pas manger.",
    "Attendez, je vous passe mon mari, il est à côté de moi.",
    "C'est au bout de la rue, après la boulangerie, à gauche.",
    "Mon code d'entrée c'est quatre cinq deux huit, bâtiment B.",
    "Il respire mais il ne répond pas quand on lui parle.",
    "La tondeuse a abîmé le gazon et mon voisin est agressif.",
    "Je rentre du travail et tout semble normal dans l'appartement.",
    "Vous pouvez rappeler à ce numéro, je reste en ligne.",
    "Il fait très froid et le chauffage ne marche plus.",
    "Oui, oui, je suis toujours là, je vous entends mal.",
    "Mon père a quatre-vingt-deux ans et il vit seul.",
    "Une dame est assise sur le trottoir, elle a l'air perdue.",
    "On a entendu un grand bruit dans la cuisine tout à l'heure.",
    "Je suis dans la galerie marchande, au premier étage.",
    "Elle a pris ses médicaments ce matin comme d'habitude.",
    "Les enfants jouent dans la cour de l'immeuble.",
    "Je ne sais pas, il est arrivé en courant et il est reparti.",
    "Le feu tricolore ne fonctionne plus au carrefour.",
    "Pardon, je répète, c'est le quarante-deux avenue de la République.",
    "Il y a beaucoup de brume sur la route ce soir.",
    "Mon téléphone n'a presque plus de batterie.",
    "Le médecin de garde ne répond pas, alors je vous appelle.",
    "Elle est enceinte de huit mois et elle a des contractions.",
    "J'entends quelqu'un crier dans la rue mais je ne vois rien.",
    "Le bus s'est arrêté au milieu de la route.",
)

# Sentence frames for keywords said in context; `{}` is the keyword.
CARRIERS = (
    "Allô, il y a {} au deuxième étage.",
    "Venez vite, c'est {}, s'il vous plaît !",
    "Je crois que c'est {}, je ne sais pas quoi faire.",
    "Mon voisin parle de {} dans l'immeuble.",
    "Il y a eu {} chez nous ce soir.",
)
# Natural French article before each keyword in a carrier sentence.
ARTICLE = {
    "malaise": "un malaise", "hémorragie": "une hémorragie", "brûlure": "une brûlure",
    "intoxication": "une intoxication", "violences": "des violences", "agression": "une agression",
    "vol": "un vol", "cambriolage": "un cambriolage", "incendie": "un incendie", "gaz": "du gaz",
    "effondrement": "un effondrement", "électrocution": "une électrocution",
}
assert set(ARTICLE) == set(KEYWORDS)


def _package_files(package: str, suffixes: tuple[str, ...]) -> list[Path]:
    """Files a Debian package installed, so that only that package's recordings are read."""
    r = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if r.returncode != 0:
        return []
    return sorted(Path(p) for p in r.stdout.split() if p.endswith(suffixes) and Path(p).is_file())


def french_prompts() -> list[Path]:
    """Real French speech with no keyword: Armelle's telephony prompts and KTuberling's words."""
    armelle = _package_files("asterisk-prompt-fr-armelle", (".gsm", ".wav"))
    tuberling = [p for p in _package_files("ktuberling-data", (".ogg", ".wav")) if "/sounds/fr/" in str(p)]
    return armelle + tuberling


def tuxpaint_descriptions() -> list[Path]:
    """Real French speech that training never hears: Tux Paint's spoken stamp descriptions (21 min, at
    least two speakers), all but those whose transcript says a keyword (one says « une bonbonne de gaz ») or
    is missing (one).
    Natural near-misses stay in: cerf-volant, volleyball, Volkswagen, gazania, géantes gazeuses."""
    out = []
    for clip in _package_files("tuxpaint-stamps-default", ("_desc_fr.ogg",)):
        text = clip.with_name(clip.name.removesuffix("_desc_fr.ogg") + ".txt")
        said = next((line.removeprefix("fr.utf8=") for line in (text.read_text(encoding="utf-8", errors="replace")
                     if text.exists() else "").splitlines() if line.startswith("fr.utf8=")), None)
        if said is not None and not says_a_keyword(said):
            out.append(clip)
    return out


def says_a_keyword(text: str) -> bool:
    """Whether a transcript holds a keyword or one of its forms, in any number or gender, as a whole word."""
    return bool(_KEYWORD_WORDS & set(re.findall(r"[a-z]+", folded(text))))


def folded(text: str) -> str:
    """Lower case without accents: « Hémorragie » and « hemorragie » are the same word here."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


_KEYWORD_WORDS = {folded(w) + end for w in (*KEYWORDS, *KEYWORD_FORMS) for end in ("", "s", "e", "es", "ent")} | {
    folded(w)[:-1] for w in KEYWORDS if w.endswith("s")}  # « violence » as well as « violences »


def noise_recordings() -> list[Path]:
    """Hold music, rings and alarms for background noise."""
    return (_package_files("asterisk-moh-opsound-wav", (".wav",))
            + _package_files("sound-theme-freedesktop", (".oga", ".ogg", ".wav")))


# --- running speech: what a caller says around a keyword ----------------------------------------
# A caller's sentence is a prefix, the keyword with its article, and a suffix, with hesitations,
# repetitions, addresses and numbers mixed in. PREFIXES × SUFFIXES alone gives 24 × 16 = 384 frames.
PREFIXES = (
    "Allô, il y a", "Allô, allô, vite, il y a", "Venez vite, c'est", "Je crois que c'est",
    "Je vous appelle parce qu'il y a", "Oui bonjour, je signale", "Au secours, il y a",
    "Madame, il y a eu", "Monsieur, je pense que c'est", "C'est pour", "Euh, il y a eu",
    "Mon voisin me dit qu'il y a", "On a", "Je viens de voir", "Attendez, euh, c'est",
    "Il faut venir, il y a", "J'appelle pour", "Dépêchez-vous, c'est", "Au quatrième étage, il y a",
    "Ma mère pense que c'est", "Dans la rue, il y a", "Vite, vite, c'est", "Bonsoir, je crois qu'il y a",
    "Pardon, je répète, c'est",
)
SUFFIXES = (
    "", "au deuxième étage.", "chez ma voisine.", "venez vite s'il vous plaît.",
    "au douze rue Victor Hugo.", "dans l'immeuble en face.", "je ne sais pas quoi faire.",
    "c'est au quarante-deux avenue de la République.", "il y a des enfants ici.", "depuis dix minutes.",
    "euh, dans le bâtiment B.", "à côté de la boulangerie.", "je suis toute seule.",
    "mon code c'est quatre cinq deux huit.", "on a besoin d'aide.", "dans le parking du centre commercial.",
)
HESITATIONS = ("euh", "heu, attendez", "enfin", "comment dire", "oui", "voilà")
CONNECTORS = ("et aussi", "et puis", "et en plus", "avec", "mais surtout")  # before a sentence's second keyword
# Non-keyword phrases in the keyword's place: near-misses in context and ordinary call words.
NEUTRAL_PHRASES = (
    "le volet qui claque", "le volume de la télé", "un volant cassé", "de la volaille", "du gazon brûlé",
    "une gazelle", "un petit incident", "un homme agressif", "une personne malade", "un violon",
    "un électricien", "un problème électronique", "une galerie", "de la brume", "un voisin",
    "une voiture mal garée", "un enfant qui pleure", "un escalier glissant", "une fenêtre ouverte",
    "une dame âgée", "un chien perdu", "un accident de vélo", "une fuite d'eau", "beaucoup de bruit",
    "une porte fermée", "un ascenseur bloqué", "de la fumée de barbecue", "un docteur", "un monsieur tombé",
    "une réunion", "un colis", "la malle de ma voiture", "la cambrousse",
)


# What else callers say right before a keyword (`sentence_segments(..., contexts=True)`): the templates above
# always put one article after one of 24 prefixes, and the model learned « du gaz » more than « gaz ».
# None ends as a phrasing of training/phrasing.py does, which measures keywords in unheard contexts.
KEYWORD_CONTEXTS: dict[str, tuple[str, ...]] = {
    "malaise": ("Mon mari a eu un", "Elle a perdu connaissance, un", "Je pense à un", "On dirait un",
                "Il a refait un", "C'est peut-être un"),
    "hémorragie": ("Il perd du sang, une", "Je crains une", "Elle a une forte", "Le médecin craint une",
                   "Après l'accident, une", "Il y a une"),
    "brûlure": ("Il s'est fait mal, une", "Ma fille a une petite", "Avec le fer à repasser, une", "On soigne une",
                "C'est une vilaine", "Il a une"),
    "intoxication": ("Sans doute une", "Toute la maison, une", "Ils ont tous une", "Le docteur évoque une",
                     "Peut-être une", "Avec le chauffage, une"),
    "violences": ("Il y a encore des", "Mon fils reçoit des", "C'est pour signaler des", "Ça tourne aux",
                  "Elle parle de", "Il y a eu des"),
    "agression": ("Je veux signaler une", "Il y a eu une", "Je sors d'une", "C'est clairement une",
                  "Au secours, une", "J'appelle pour une"),
    "vol": ("Je veux porter plainte pour un", "Il y a eu un", "C'est un", "Au secours, un", "Encore un",
            "Je signale le"),
    "cambriolage": ("Il y a eu un", "J'appelle pour le", "Ils préparent un", "Encore un", "C'est un",
                    "On a peur d'un"),
    "incendie": ("Il y a un", "Au secours, un", "Je vois de la fumée, un", "C'est un petit", "Un voisin signale un",
                 "Attention, un"),
    "gaz": ("Ça sent le", "Ça pue le", "On sent le", "Coupez le", "Une explosion de", "Il y a du"),
    "effondrement": ("Il y a eu un", "Au secours, un", "On craint un", "C'est un énorme", "Attention, un",
                     "Le plafond, un"),
    "électrocution": ("Il a eu une", "Au secours, une", "Sans doute une", "C'est une", "Il a touché la prise, une",
                      "Encore une"),
}
assert set(KEYWORD_CONTEXTS) == set(KEYWORDS)
# The near-misses a keyword's contexts also precede in keyword-free sentences, so that the context alone
# never tells the keyword: « ça sent le gazon » as well as « ça sent le gaz ».
NEAR_MISSES_OF = {
    "malaise": ("malade", "malin"), "hémorragie": ("hémisphère",), "brûlure": ("brume",), "intoxication": (),
    "violences": ("violon", "violette"), "agression": ("agressif", "agrafe"),
    "vol": ("volet", "volume", "volant", "volaille", "volcan"), "cambriolage": ("cambrousse",),
    "incendie": ("incident",), "gaz": ("gazon", "gazelle"), "effondrement": (),
    "électrocution": ("électricien", "électronique"),
}
OPENERS = ("", "Allô,", "Oui,", "Écoutez,", "Bonjour,", "Vite,")
# Ends of those sentences besides the templates' SUFFIXES (half of them): a window also hears what follows a
# short keyword. None begins with the two words a `training/phrasing.py` phrasing continues with.
CONTEXT_ENDINGS = ("partout.", "qui s'échappe.", "encore une fois.", "vraiment, venez.", "je vous jure.",
                   "tout de suite.", "là, maintenant.", "hein, vite.", "chez nous.", "près de l'école.",
                   "en bas de l'immeuble.", "ce matin.", "pour la deuxième fois.", "sur la place du marché.")


def sentence_segments(rng, keywords: tuple[str, ...], contexts: bool = False) -> list[tuple[str, str | None]]:
    """One caller sentence as (text, keyword or None) segments; keyword-free when `keywords` is empty.

    The keyword segment is the keyword alone, so its start and end can be timed; its article is the
    end of the previous segment. With `contexts`, each keyword follows one of its KEYWORD_CONTEXTS instead
    of a template's prefix and article, and a keyword-free sentence puts a near-miss after one.
    """
    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    if contexts:
        return _context_segments(rng, pick, keywords)
    segs: list[tuple[str, str | None]] = []
    prefix = pick(PREFIXES)
    if rng.random() < 0.25:
        prefix = f"{prefix}, {pick(HESITATIONS)},"
    if not keywords:
        segs.append((f"{prefix} {pick(NEUTRAL_PHRASES)}", None))
        if rng.random() < 0.5:
            segs.append((f"et {pick(NEUTRAL_PHRASES)}", None))
    for i, kw in enumerate(keywords):
        article, word = ARTICLE[kw].rsplit(" ", 1)
        lead = prefix if i == 0 else pick(CONNECTORS)
        segs += [(f"{lead} {article}", None), (word, kw)]
        if rng.random() < 0.15:  # the caller repeats it
            segs += [(f", oui, {article}", None), (word, kw)]
    suffix = pick(SUFFIXES)
    if suffix:
        segs.append((suffix, None))
    return segs


def _context_segments(rng, pick, keywords: tuple[str, ...]) -> list[tuple[str, str | None]]:
    def lowered(text: str) -> str:
        return text[0].lower() + text[1:]

    opener = pick(OPENERS)
    segs: list[tuple[str, str | None]] = []
    if not keywords:
        kw = pick([k for k in KEYWORDS if NEAR_MISSES_OF[k]])
        segs.append((f"{opener} {lowered(pick(KEYWORD_CONTEXTS[kw]))} {pick(NEAR_MISSES_OF[kw])}".strip(), None))
    for i, kw in enumerate(keywords):
        lead = pick(KEYWORD_CONTEXTS[kw])
        lead = f"et {lowered(lead)}" if i else (f"{opener} {lowered(lead)}" if opener else lead)
        segs += [(lead, None), (kw, kw)]
    suffix = pick(CONTEXT_ENDINGS) if rng.random() < 0.5 else pick(SUFFIXES)
    if suffix:
        segs.append((suffix, None))
    return segs
