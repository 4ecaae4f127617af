"""Benchmark-style captions of synthetic persons, and controlled caption noise.

A caption is first built as a list of sentences made of pieces: plain text, or a :class:`ColourWord`
that remembers which attribute it describes. Noise works on that structure, so a wrong colour
replaces exactly one attribute's colour, and every change is recorded as a :class:`NoiseEvent`.

Noise kinds (:data:`NOISE_KINDS`):

- ``"irrelevant"``: a sentence about the background, the weather or a speculation ("possibly").
- ``"wrong_colour"``: one mentioned colour is replaced by another one.
- ``"filler"``: filler words ("kind of", "basically", ...) inserted inside the caption.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Sequence, Union

from .attributes import COLOURS, HAIR_COLOURS, PersonAttributes

NOISE_KINDS: tuple[str, ...] = ("irrelevant", "wrong_colour", "filler")


@dataclass
class ColourWord:
    """A colour in a caption; ``attribute`` is the attribute column it describes."""

    attribute: str
    colour: str


Piece = Union[str, ColourWord]
Sentence = list[Piece]


@dataclass(frozen=True)
class NoiseEvent:
    """One change made to a caption: its ``kind`` (of :data:`NOISE_KINDS`) and a readable ``detail``."""

    kind: str
    detail: str


@dataclass(frozen=True)
class Caption:
    """A caption as published (``text``), before noise (``clean``), and the noise added to it."""

    text: str
    clean: str
    noise: tuple[NoiseEvent, ...] = field(default_factory=tuple)

    @property
    def noise_kinds(self) -> list[str]:
        return [event.kind for event in self.noise]


# spelling variants that do not change the meaning; chosen per caption at render time
_GREY_SPELLINGS = ("grey", "gray")

_TOPS = {
    "t-shirt": ("t-shirt", "short-sleeved t-shirt", "tee shirt", "short-sleeved top"),
    "shirt": ("shirt", "long-sleeved shirt", "button-up shirt", "collared shirt"),
    "sweater": ("sweater", "jumper", "pullover", "knit sweater"),
    "jacket": ("jacket", "zip-up jacket", "short jacket"),
    "coat": ("coat", "long coat", "knee-length coat", "overcoat"),
    "tank top": ("tank top", "sleeveless top", "vest top"),
}
_BOTTOMS = {
    "trousers": ("trousers", "pants", "long pants", "slacks"),
    "jeans": ("jeans", "denim jeans", "jeans"),
    "shorts": ("shorts", "short pants", "knee-length shorts"),
    "skirt": ("skirt", "knee-length skirt", "flared skirt"),
}
_SHOES = {
    "sneakers": ("sneakers", "trainers", "sports shoes", "running shoes"),
    "boots": ("boots", "ankle boots", "boots"),
    "leather shoes": ("leather shoes", "dress shoes", "shoes"),
    "sandals": ("sandals", "open sandals", "sandals"),
}
_NOUNS = {
    "man": ("man", "man", "male", "guy", "gentleman"),
    "woman": ("woman", "woman", "female", "lady", "girl"),
}
_AGE_WORDS = {"young": ("young",), "middle-aged": ("middle-aged",), "elderly": ("elderly", "old", "older")}
_BODY_WORDS = {"slim": ("slim", "thin", "skinny"), "heavy": ("heavy-set", "chubby", "heavy"), "average": ()}
_HAIR_LENGTH_WORDS = {
    "short": ("short",), "shoulder-length": ("shoulder-length", "medium-length"), "long": ("long",),
}
_WEAR = ("wears", "is wearing", "is dressed in", "has on", "is in")
_CARRY = ("carries", "is carrying", "holds", "has")

IRRELEVANT = {
    "background": (
        "The background shows a busy street.", "There are some cars parked behind {obj}.",
        "{Subj} is standing in front of a building.", "A shop window can be seen in the background.",
        "There are trees and a bench behind {obj}.", "The wall behind {obj} is painted grey.",
    ),
    "weather": (
        "It seems to be a sunny day.", "The weather looks cloudy.", "It might be raining a little.",
        "The photo was taken on a bright afternoon.", "It looks cold outside.",
    ),
    "speculation": (
        "{Subj} is possibly a student.", "{Subj} might be waiting for a bus.",
        "{Subj} seems to be in a hurry.", "{Subj} is probably on {pos} way to work.",
        "{Subj} may be talking to a friend.", "{Subj} looks like {subj} is going shopping.",
    ),
}
FILLERS = (
    "kind of", "sort of", "basically", "actually", "like", "really", "just", "um", "you know", "somewhat",
)

def _words_of(*phrases: str) -> set[str]:
    return {w for phrase in phrases for w in re.findall(r"[a-z]+", phrase.lower())}


#: Every word a caption uses to describe the person's appearance (colours, garments, accessories, the subject's
#: noun, age and build, hair), and nothing else: not the articles, verbs, pronouns and connectives that every
#: caption shares, nor the words of the noise. The oracle of the noise-token AUC's ceiling (docs/method.md
#: section 13): a token score that knew exactly which words describe the person.
ATTRIBUTE_WORDS: frozenset[str] = frozenset(
    _words_of(*COLOURS, *HAIR_COLOURS, *_GREY_SPELLINGS)
    | _words_of(*(f"{key} {' '.join(names)}" for table in (_TOPS, _BOTTOMS, _SHOES, _NOUNS, _AGE_WORDS, _BODY_WORDS,
                                                             _HAIR_LENGTH_WORDS) for key, names in table.items()))
    | _words_of("hair", "bald head", "shaved head", "hat", "cap", "scarf", "glasses", "spectacles", "backpack",
                "rucksack", "handbag", "shoulder bag", "purse")
) - {"pair", "of", "in", "average"}  # "a pair of", "a coat in red"; "average" build goes unsaid

_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")
_SPACE_PUNCT = re.compile(r" +([,.])")


def _pronouns(person: PersonAttributes) -> dict[str, str]:
    if person.gender == "man":
        return {"Subj": "He", "subj": "he", "obj": "him", "pos": "his"}
    return {"Subj": "She", "subj": "she", "obj": "her", "pos": "her"}


def _join(items: list[list[Piece]], rng: random.Random) -> list[Piece]:
    """``a``, ``a and b``, ``a, b and c`` (sometimes with an Oxford comma)."""
    if len(items) == 1:
        return list(items[0])
    out: list[Piece] = []
    for i, item in enumerate(items[:-1]):
        out += item
        if i < len(items) - 2:
            out.append(",")
    if len(items) > 2 and rng.random() < 0.3:
        out.append(",")
    out.append("and")
    return out + items[-1]


class _Phrases:
    """Noun phrases for one caption (each call draws a fresh phrasing)."""

    def __init__(self, person: PersonAttributes, rng: random.Random) -> None:
        self.p, self.rng = person, rng

    def subject(self, determiner: str | None = None) -> list[Piece]:
        p, rng = self.p, self.rng
        adjectives = []
        if rng.random() < 0.75:
            adjectives.append(rng.choice(_AGE_WORDS[p.age]))
        if _BODY_WORDS[p.body_shape] and rng.random() < 0.6:
            adjectives.append(rng.choice(_BODY_WORDS[p.body_shape]))
        rng.shuffle(adjectives)
        noun = rng.choice(_NOUNS[p.gender])
        if noun == "girl" and p.age != "young":
            noun = "woman"
        det = determiner or rng.choice(("A", "A", "The", "This"))
        return [det, *adjectives, noun]

    def hair(self) -> list[Piece]:
        p, rng = self.p, self.rng
        if p.hair_length == "bald":
            return [rng.choice(("a bald head", "a shaved head", "no hair"))]
        length = rng.choice(_HAIR_LENGTH_WORDS[p.hair_length])
        colour = ColourWord("hair_colour", p.hair_colour)
        words: list[Piece] = [length, colour] if rng.random() < 0.75 else [colour, length]
        return [*words, "hair"]

    def garment(self, attribute: str, colour: str, names: Sequence[str], plural: bool) -> list[Piece]:
        rng = self.rng
        name = rng.choice(names)
        word = ColourWord(attribute, colour)
        form = rng.random()
        if plural:
            if form < 0.45:
                return [word, name]
            if form < 0.9:
                return ["a pair of", word, name]
            return [name, "in", word]
        if form < 0.85:
            return ["a", word, name]
        return ["a", name, "in", word]

    def top(self) -> list[Piece]:
        return self.garment("top_colour", self.p.top_colour, _TOPS[self.p.top_type], plural=False)

    def bottom(self) -> list[Piece]:
        plural = self.p.bottom_type != "skirt"
        return self.garment("bottom_colour", self.p.bottom_colour, _BOTTOMS[self.p.bottom_type], plural)

    def shoes(self) -> list[Piece]:
        return self.garment("shoe_colour", self.p.shoe_colour, _SHOES[self.p.shoe_type], plural=True)

    def worn_extras(self) -> list[list[Piece]]:
        """Hat, scarf and glasses, as things one wears."""
        p, rng = self.p, self.rng
        extras: list[list[Piece]] = []
        if p.hat != "none":
            extras.append(["a", ColourWord("hat", p.hat), rng.choice(("hat", "cap", "hat"))])
        if p.scarf != "none":
            extras.append(["a", ColourWord("scarf", p.scarf), "scarf"])
        if p.glasses:
            extras.append([rng.choice(("glasses", "a pair of glasses", "spectacles"))])
        return extras

    def bags(self) -> list[list[Piece]]:
        p, rng = self.p, self.rng
        bags: list[list[Piece]] = []
        if p.backpack != "none":
            name = rng.choice(("backpack", "backpack", "rucksack"))
            bags.append(["a", ColourWord("backpack", p.backpack), name])
        if p.handbag != "none":
            name = rng.choice(("handbag", "shoulder bag", "purse"))
            bags.append(["a", ColourWord("handbag", p.handbag), name])
        return bags


def build_caption(person: PersonAttributes, view: str, rng: random.Random) -> list[Sentence]:
    """One clean caption of ``person`` as sentences of pieces, from a randomly drawn template.

    Clothes and accessories appear in a random order; the top colour is always mentioned.
    Glasses are not mentioned in a back view (they cannot be seen).
    """
    ph = _Phrases(person, rng)
    pr = _pronouns(person)
    clothes = [ph.top(), ph.bottom()]
    if rng.random() < 0.9:
        clothes.append(ph.shoes())
    glasses = ("glasses", "a pair of glasses", "spectacles")
    extras = [e for e in ph.worn_extras() if not (view == "back" and e[-1] in glasses)]
    bags = ph.bags()
    if rng.random() < 0.5:  # otherwise the usual head-to-toe order
        rng.shuffle(clothes)
    rng.shuffle(extras)
    rng.shuffle(bags)
    mention_hair = rng.random() < 0.9
    sentences: list[Sentence] = []
    template = rng.randrange(6)
    if template == 0:  # A young woman with long black hair wears a red coat, ... She carries ...
        head: Sentence = ph.subject()
        if mention_hair:
            head += ["with", *ph.hair()]
        sentences.append(head + [rng.choice(_WEAR), *_join(clothes + extras, rng)])
    elif template == 1:  # A man is wearing ... He has short brown hair.
        sentences.append(ph.subject() + [rng.choice(_WEAR), *_join(clothes, rng)])
        if mention_hair:
            sentences.append([pr["Subj"], "has", *ph.hair()])
        if extras:
            verb = rng.choice(("also wears", "is also wearing", "wears"))
            sentences.append([pr["Subj"], verb, *_join(extras, rng)])
    elif template == 2:  # The woman has long hair and wears a top. She also wears ...
        first = ph.subject(rng.choice(("The", "This")))
        if mention_hair:
            first += ["has", *ph.hair(), "and"]
        sentences.append(first + [rng.choice(_WEAR), *clothes[0]])
        rest = clothes[1:] + extras
        verb = rng.choice(("also wears", "is also wearing", "has on"))
        sentences.append([pr["Subj"], verb, *_join(rest, rng)])
    elif template == 3:  # A woman wearing a red coat, blue jeans and white shoes, with long hair.
        verb = rng.choice(("wearing", "dressed in", "in"))
        sentence = ph.subject("A") + [verb, *_join(clothes + extras, rng)]
        if mention_hair:
            sentence += [",", "with", *ph.hair()]
        if bags and rng.random() < 0.5:
            sentence += [",", "carrying", *_join(bags, rng)]
            bags = []
        sentences.append(sentence)
    elif template == 4:  # The man in a blue shirt and black trousers is walking. He has ...
        action = rng.choice(("walking", "standing", "walking along"))
        subject = ph.subject(rng.choice(("The", "A")))
        sentences.append(subject + ["in", *_join(clothes[:2], rng), "is", action])
        rest = clothes[2:] + extras
        second: Sentence = [pr["Subj"]]
        if mention_hair:
            second += ["has", *ph.hair()]
            if rest:
                second += ["and", rng.choice(("wears", "is wearing"))]
        elif rest:
            second += [rng.choice(("wears", "is wearing"))]
        if rest:
            second += _join(rest, rng)
        if len(second) > 1:
            sentences.append(second)
    else:  # Long hair opening: "This person has long black hair. ..." with a colour list afterwards.
        if mention_hair:
            sentences.append(ph.subject(rng.choice(("This", "The"))) + ["has", *ph.hair()])
            sentences.append([pr["Subj"], rng.choice(_WEAR), *_join(clothes + extras, rng)])
        else:
            sentences.append(ph.subject() + [rng.choice(_WEAR), *_join(clothes + extras, rng)])
    if bags:
        if rng.random() < 0.3:
            sentences.append([pr["Subj"], "has", *_join(bags, rng), "with", pr["obj"]])
        else:
            sentences.append([pr["Subj"], rng.choice(_CARRY), *_join(bags, rng)])
    if view == "back" and rng.random() < 0.15:
        sentences.append([pr["Subj"], "is walking away from the camera"])
    return sentences


def render(sentences: list[Sentence], spellings: dict[str, str] | None = None) -> str:
    """Sentences of pieces -> text: capitalised sentences, correct ``a``/``an``, tidy punctuation."""
    out = []
    for sentence in sentences:
        words = []
        for piece in sentence:
            if isinstance(piece, ColourWord):
                words.append((spellings or {}).get(piece.colour, piece.colour))
            else:
                words.append(piece)
        text = " ".join(words)
        out.append(text[:1].upper() + text[1:] + ".")
    return tidy(" ".join(out))


def tidy(text: str) -> str:
    """Fix spacing before punctuation and ``a`` before a vowel."""
    text = _SPACE_PUNCT.sub(r"\1", text)
    text = text.replace(",,", ",").replace(",.", ".")
    return _ARTICLE.sub(lambda m: m.group(1) + "n ", text)


def _wrong_colour(sentences: list[Sentence], rng: random.Random) -> NoiseEvent:
    words = [piece for sentence in sentences for piece in sentence if isinstance(piece, ColourWord)]
    word = rng.choice(words)
    palette = HAIR_COLOURS if word.attribute == "hair_colour" else COLOURS
    wrong = rng.choice([c for c in palette if c != word.colour])
    event = NoiseEvent("wrong_colour", f"{word.attribute}: {word.colour} -> {wrong}")
    word.colour = wrong
    return event


def _irrelevant(sentences: list[Sentence], person: PersonAttributes, rng: random.Random) -> NoiseEvent:
    category = rng.choice(tuple(IRRELEVANT))
    phrase = rng.choice(IRRELEVANT[category]).format(**_pronouns(person)).rstrip(".")
    sentences.insert(rng.randint(1, len(sentences)), [phrase])
    return NoiseEvent("irrelevant", f"{category}: {phrase}.")


def _filler(text: str, rng: random.Random) -> tuple[str, NoiseEvent]:
    words = text.split(" ")
    inserted = []
    for _ in range(rng.randint(1, 2)):
        slots = [i for i in range(1, len(words)) if not words[i - 1].endswith((".", ","))]
        filler = rng.choice(FILLERS)
        words.insert(rng.choice(slots), filler)
        inserted.append(filler)
    return " ".join(words), NoiseEvent("filler", "; ".join(inserted))


def make_caption(person: PersonAttributes, view: str, rng: random.Random,
                 noise_kinds: Sequence[str] = ()) -> Caption:
    """A caption of ``person`` with the given kinds of noise added (none: a clean caption).

    The result holds the noisy text, the clean text it was made from, and one
    :class:`NoiseEvent` per kind, in :data:`NOISE_KINDS` order.
    """
    unknown = set(noise_kinds) - set(NOISE_KINDS)
    if unknown:
        raise ValueError(f"unknown noise kinds {sorted(unknown)}; known: {list(NOISE_KINDS)}")
    sentences = build_caption(person, view, rng)
    spellings = {"grey": rng.choice(_GREY_SPELLINGS)}
    clean = render(sentences, spellings)
    events = []
    if "wrong_colour" in noise_kinds:
        events.append(_wrong_colour(sentences, rng))
    if "irrelevant" in noise_kinds:
        events.append(_irrelevant(sentences, person, rng))
    text = render(sentences, spellings)
    if "filler" in noise_kinds:
        text, event = _filler(text, rng)
        text = tidy(text)
        events.append(event)
    events.sort(key=lambda e: NOISE_KINDS.index(e.kind))
    return Caption(text=text, clean=clean, noise=tuple(events))


def draw_noise_kinds(rng: random.Random, rate: float, kinds: Sequence[str]) -> tuple[str, ...]:
    """Which noise a caption gets: with probability ``rate`` one kind, sometimes two, else none."""
    if not kinds or rng.random() >= rate:
        return ()
    count = 2 if len(kinds) > 1 and rng.random() < 0.25 else 1
    return tuple(rng.sample(list(kinds), count))


_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens without punctuation, like CUHK-PEDES ``processed_tokens``."""
    return _TOKEN.findall(text.lower())
