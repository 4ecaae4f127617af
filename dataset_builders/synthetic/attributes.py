"""The attribute vocabulary of synthetic persons, and how identities are drawn from it.

An identity is a fixed combination of visible attributes (:class:`PersonAttributes`). Identities
are drawn with a seeded :class:`random.Random`; no two identities of one data set share the same
captioned attributes, so a perfect caption always singles out one person.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from typing import Any

RGB = tuple[int, int, int]

#: Garment and accessory colours: caption word -> RGB used by the renderer.
COLOURS: dict[str, RGB] = {
    "black": (24, 24, 28),
    "white": (236, 236, 232),
    "grey": (128, 128, 132),
    "red": (196, 30, 36),
    "blue": (38, 72, 190),
    "green": (36, 136, 60),
    "yellow": (232, 204, 40),
    "orange": (236, 124, 28),
    "purple": (116, 48, 148),
    "pink": (236, 136, 172),
    "brown": (112, 70, 36),
    "beige": (212, 192, 152),
}

#: Hair colours: caption word -> RGB.
HAIR_COLOURS: dict[str, RGB] = {
    "black": (20, 18, 18),
    "brown": (96, 58, 30),
    "blonde": (222, 190, 110),
    "grey": (160, 160, 160),
    "red": (170, 64, 30),
}

#: Skin tones (not captioned: they vary between identities like any uncaptioned detail would).
SKIN_TONES: tuple[RGB, ...] = (
    (242, 208, 182), (226, 184, 150), (198, 148, 110), (160, 110, 76), (112, 74, 50),
)

GENDERS = ("man", "woman")
AGES = ("young", "middle-aged", "elderly")
BODY_SHAPES = ("slim", "average", "heavy")
HAIR_LENGTHS = ("bald", "short", "shoulder-length", "long")
TOP_TYPES = ("t-shirt", "shirt", "sweater", "jacket", "coat", "tank top")
BOTTOM_TYPES = ("trousers", "jeans", "shorts", "skirt")
SHOE_TYPES = ("sneakers", "boots", "leather shoes", "sandals")
#: Accessories that have a colour (the column holds the colour, or "none").
COLOURED_ACCESSORIES = ("backpack", "handbag", "hat", "scarf")
#: Colours jeans come in (jeans of other colours look odd in captions).
JEANS_COLOURS = ("blue", "black", "grey", "white")
#: Views a picture can be taken from.
VIEWS = ("front", "back", "side")

#: Attribute fields whose value is a colour word of :data:`COLOURS` (or "none" for accessories).
COLOUR_FIELDS = ("top_colour", "bottom_colour", "shoe_colour") + COLOURED_ACCESSORIES

ACCESSORY_PROBABILITY = {"backpack": 0.35, "handbag": 0.25, "hat": 0.2, "scarf": 0.15, "glasses": 0.25}


@dataclass(frozen=True)
class PersonAttributes:
    """The visible attributes of one identity (every image of the identity shares them).

    Accessory fields (``backpack``, ``handbag``, ``hat``, ``scarf``) hold a colour word, or
    ``"none"`` when the person has no such accessory; ``hair_colour`` is ``"none"`` for bald
    persons. ``skin_tone`` indexes :data:`SKIN_TONES`
    and is the only attribute that captions never mention.
    """

    gender: str
    age: str
    body_shape: str
    hair_length: str
    hair_colour: str
    top_type: str
    top_colour: str
    bottom_type: str
    bottom_colour: str
    shoe_type: str
    shoe_colour: str
    backpack: str
    handbag: str
    hat: str
    scarf: str
    glasses: bool
    skin_tone: int

    def captioned_key(self) -> tuple[Any, ...]:
        """The attributes captions can mention (everything but the skin tone): identities differ in it."""
        return tuple(getattr(self, f.name) for f in fields(self) if f.name != "skin_tone")

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of the attributes (column name -> value)."""
        return asdict(self)

    @property
    def accessories(self) -> list[str]:
        """Names of the accessories the person has, in a fixed order."""
        names = [name for name in COLOURED_ACCESSORIES if getattr(self, name) != "none"]
        if self.glasses:
            names.append("glasses")
        return names


#: Column names of the attributes, in schema order.
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(f.name for f in fields(PersonAttributes))


def sample_attributes(rng: random.Random) -> PersonAttributes:
    """Draw one identity's attributes; combinations are kept plausible (e.g. skirts for women)."""
    gender = rng.choice(GENDERS)
    age = rng.choice(AGES)
    colour_names = list(COLOURS)
    hair_lengths = HAIR_LENGTHS if gender == "man" else HAIR_LENGTHS[1:]
    hair_length = rng.choices(
        hair_lengths, weights=(1, 5, 2, 1) if gender == "man" else (2, 3, 5)
    )[0]
    hair_colour = "grey" if age == "elderly" and rng.random() < 0.6 else rng.choice(list(HAIR_COLOURS))
    if age != "elderly" and hair_colour == "grey" and rng.random() < 0.7:
        hair_colour = rng.choice(("black", "brown", "blonde", "red"))
    if hair_length == "bald":
        hair_colour = "none"
    bottom_types = BOTTOM_TYPES if gender == "woman" else BOTTOM_TYPES[:3]
    bottom_type = rng.choice(bottom_types)
    bottom_colour = rng.choice(JEANS_COLOURS if bottom_type == "jeans" else colour_names)
    top_colour = rng.choice(colour_names)
    if top_colour == bottom_colour and rng.random() < 0.7:
        top_colour = rng.choice([c for c in colour_names if c != bottom_colour])
    accessory = {
        name: (rng.choice(colour_names) if rng.random() < ACCESSORY_PROBABILITY[name] else "none")
        for name in COLOURED_ACCESSORIES
    }
    return PersonAttributes(
        gender=gender,
        age=age,
        body_shape=rng.choice(BODY_SHAPES),
        hair_length=hair_length,
        hair_colour=hair_colour,
        top_type=rng.choice(TOP_TYPES),
        top_colour=top_colour,
        bottom_type=bottom_type,
        bottom_colour=bottom_colour,
        shoe_type=rng.choice(SHOE_TYPES),
        shoe_colour=rng.choice(colour_names),
        backpack=accessory["backpack"],
        handbag=accessory["handbag"],
        hat=accessory["hat"],
        scarf=accessory["scarf"],
        glasses=rng.random() < ACCESSORY_PROBABILITY["glasses"],
        skin_tone=rng.randrange(len(SKIN_TONES)),
    )


def sample_identities(num_identities: int, seed: int) -> list[PersonAttributes]:
    """Draw ``num_identities`` identities whose captioned attributes are pairwise different.

    Deterministic for ``seed``; identity ``i`` of the list is person id ``i + 1``. The first
    ``n`` identities do not depend on ``num_identities`` (drawing more only appends).
    """
    rng = random.Random(f"gadms-synthetic/identities/{seed}")
    seen: set[tuple[Any, ...]] = set()
    identities: list[PersonAttributes] = []
    while len(identities) < num_identities:
        person = sample_attributes(rng)
        key = person.captioned_key()
        if key in seen:
            continue
        seen.add(key)
        identities.append(person)
    return identities
