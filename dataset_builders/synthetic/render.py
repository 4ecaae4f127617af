"""Procedural drawing of one person image with PIL ``ImageDraw`` primitives.

:func:`sample_scene` draws everything that varies between the images of one identity (view, pose,
mirror, scale, position, lighting); :func:`render_person` draws the background clutter and the
person. Geometry is expressed in units of the person's height, so any image size works (the default
is the benchmarks' 384 x 128, height x width; 96 x 32 is fine for CPU demos).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter

from .attributes import COLOURS, HAIR_COLOURS, SKIN_TONES, VIEWS, PersonAttributes, RGB

LONG_SLEEVES = {"shirt": 1.0, "sweater": 1.0, "jacket": 1.0, "coat": 1.0, "t-shirt": 0.38, "tank top": 0.0}
#: Where the top garment ends (units of person height from the top of the head).
TOP_LENGTH = {"t-shirt": 0.5, "shirt": 0.51, "sweater": 0.5, "jacket": 0.53, "coat": 0.76, "tank top": 0.49}
BACKGROUND_BASES: tuple[RGB, ...] = (
    (150, 150, 146), (120, 128, 120), (176, 166, 150), (96, 104, 116), (188, 190, 196),
    (132, 140, 100), (168, 150, 132), (80, 84, 88), (200, 196, 184), (110, 120, 140),
)
DARK: RGB = (30, 24, 22)


@dataclass(frozen=True)
class Scene:
    """What differs between two pictures of the same person."""

    view: str  #: "front", "back" or "side"
    mirror: int  #: +1 or -1: horizontal flip of the person (for "side": which way they face)
    stride: float  #: leg stride, -1 .. 1
    arm_swing: float  #: arm swing, -1 .. 1
    scale: float  #: person height as a fraction of the usable image height
    dx: float  #: horizontal offset, -1 .. 1 (times 8 % of the width)
    dy: float  #: vertical offset, -1 .. 1 (times 4 % of the height)
    brightness: float  #: global gain
    colour_cast: tuple[float, float, float]  #: per-channel gains (white balance)
    blur: bool  #: a slight blur, like a low-resolution camera


def sample_scene(rng: random.Random) -> Scene:
    """Draw the per-image variation (view, pose, framing and lighting) of one picture."""
    stride = rng.uniform(-1.0, 1.0)
    return Scene(
        view=rng.choices(VIEWS, weights=(0.45, 0.3, 0.25))[0],
        mirror=rng.choice((1, -1)),
        stride=stride,
        arm_swing=max(-1.0, min(1.0, -stride + rng.uniform(-0.4, 0.4))),
        scale=rng.uniform(0.8, 0.95),
        dx=rng.uniform(-1.0, 1.0),
        dy=rng.uniform(-1.0, 1.0),
        brightness=rng.uniform(0.72, 1.22),
        colour_cast=(rng.uniform(0.9, 1.1), rng.uniform(0.93, 1.07), rng.uniform(0.9, 1.1)),
        blur=rng.random() < 0.25,
    )


def _jitter(colour: RGB, rng: random.Random, amount: int = 14) -> RGB:
    """A slightly different shade of ``colour`` (fabric and light differ between pictures)."""
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in colour)  # type: ignore


def _towards(a: tuple[float, float], b: tuple[float, float], t: float) -> tuple[float, float]:
    """The point a fraction ``t`` of the way from ``a`` to ``b`` (e.g. where a sleeve ends)."""
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)


def _shade(colour: RGB, factor: float) -> RGB:
    return tuple(min(255, max(0, int(c * factor))) for c in colour)  # type: ignore


def _draw_background(draw: ImageDraw.ImageDraw, width: int, height: int, rng: random.Random) -> None:
    """Wall or street, ground, and a few random objects (windows, signs, cars, trees, poles)."""
    base = _jitter(rng.choice(BACKGROUND_BASES), rng, 24)
    draw.rectangle((0, 0, width, height), fill=base)
    horizon = int(height * rng.uniform(0.55, 0.85))
    ground = _jitter(_shade(rng.choice(BACKGROUND_BASES), rng.uniform(0.6, 1.1)), rng, 20)
    draw.rectangle((0, horizon, width, height), fill=ground)
    vivid = list(COLOURS.values())
    for _ in range(rng.randint(2, 7)):
        colour = rng.choice(vivid) if rng.random() < 0.3 else _jitter(rng.choice(BACKGROUND_BASES), rng, 40)
        x0 = rng.uniform(-0.3, 1.0) * width
        y0 = rng.uniform(0.0, 0.9) * height
        w = rng.uniform(0.1, 0.7) * width
        h = rng.uniform(0.03, 0.35) * height
        kind = rng.random()
        if kind < 0.55:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=colour)
        elif kind < 0.8:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
        else:
            draw.line((x0, 0, x0 + rng.uniform(-3, 3), height), fill=colour, width=max(1, int(width * 0.04)))


class _Painter:
    """Maps person coordinates (units of person height, x mirrored) to pixels and draws."""

    def __init__(self, draw: ImageDraw.ImageDraw, cx: float, top: float, hp: float, mirror: int) -> None:
        self.draw, self.cx, self.top, self.hp, self.mirror = draw, cx, top, hp, mirror

    def p(self, x: float, y: float) -> tuple[float, float]:
        return (self.cx + self.mirror * x * self.hp, self.top + y * self.hp)

    def poly(self, points: list[tuple[float, float]], fill: RGB) -> None:
        self.draw.polygon([self.p(x, y) for x, y in points], fill=fill)

    def box(self, x0: float, y0: float, x1: float, y1: float, fill: RGB, ellipse: bool = False) -> None:
        (a, b), (c, d) = self.p(x0, y0), self.p(x1, y1)
        bbox = (min(a, c), min(b, d), max(a, c), max(b, d))
        (self.draw.ellipse if ellipse else self.draw.rectangle)(bbox, fill=fill)

    def line(self, points: list[tuple[float, float]], fill: RGB, width: float) -> None:
        self.draw.line([self.p(x, y) for x, y in points], fill=fill, width=max(1, round(width * self.hp)))


def _widths(person: PersonAttributes) -> tuple[float, float, float, float]:
    """Half widths of shoulders, waist and hips, and the limb width, in units of height."""
    k = {"slim": 0.84, "average": 1.0, "heavy": 1.3}[person.body_shape]
    if person.gender == "man":
        return 0.125 * k, 0.094 * k, 0.1 * k, 0.055 * k
    return 0.104 * k, 0.08 * k, 0.114 * k, 0.05 * k


def _body_colours(person: PersonAttributes, rng: random.Random) -> tuple[RGB, RGB, RGB, RGB, RGB]:
    """Skin, top, bottom, shoe and hair colours of one picture of ``person`` (jittered, drawn in this
    order)."""
    skin = _jitter(SKIN_TONES[person.skin_tone], rng, 8)
    top = _jitter(COLOURS[person.top_colour], rng)
    bottom = _jitter(COLOURS[person.bottom_colour], rng)
    shoe = _jitter(COLOURS[person.shoe_colour], rng)
    hair = _jitter(HAIR_COLOURS.get(person.hair_colour, DARK), rng, 8)
    return skin, top, bottom, shoe, hair


def _draw_frontal(pt: _Painter, person: PersonAttributes, scene: Scene, rng: random.Random,
                  back: bool) -> None:
    """A person seen from the front (``back=False``) or from behind."""
    skin, top, bottom, shoe, hair = _body_colours(person, rng)
    sh, wa, hi, limb = _widths(person)
    stoop = 0.012 if person.age == "elderly" else 0.0
    s = scene.stride * 0.03
    ankles = ((-0.05 - s, 0.955 - max(0.0, scene.stride) * 0.02),
              (0.05 - s * 0.3, 0.955 + min(0.0, scene.stride) * 0.02))
    hips = ((-hi * 0.5, 0.5), (hi * 0.5, 0.5))
    # long hair behind the back is drawn first in the front view
    hair_end = {"long": 0.33, "shoulder-length": 0.2}.get(person.hair_length)
    if hair_end and not back:
        pt.box(-0.062, 0.04 + stoop, 0.062, hair_end, hair)
    # legs (skin, then the bottom garment over them)
    for hip, ankle in zip(hips, ankles):
        pt.line([hip, ankle], skin, limb)
    knee_y = {"shorts": 0.67, "skirt": 0.5}.get(person.bottom_type, 0.96)
    if person.bottom_type != "skirt":
        for hip, ankle in zip(hips, ankles):
            t = (knee_y - 0.5) / (ankle[1] - 0.5)
            end = (hip[0] + (ankle[0] - hip[0]) * t, knee_y)
            pt.line([hip, end], bottom, limb * 1.12)
        pt.box(-hi, 0.46, hi, 0.56, bottom)
    else:
        pt.poly([(-wa, 0.46), (wa, 0.46), (hi * 1.45, 0.71), (-hi * 1.45, 0.71)], bottom)
    # shoes
    shoe_top = {"boots": 0.87, "sandals": 0.975}.get(person.shoe_type, 0.935)
    for ax, ay in ankles:
        pt.box(ax - 0.034, ay + shoe_top - 0.955, ax + 0.034, ay + 0.035, shoe)
    # torso and the top garment
    length = TOP_LENGTH[person.top_type]
    flare = 1.25 if person.top_type == "coat" else 1.0
    pt.poly([(-sh, 0.155 + stoop), (sh, 0.155 + stoop), (wa * 1.05, 0.42), (hi * flare, length),
             (-hi * flare, length), (-wa * 1.05, 0.42)], top)
    if person.top_type == "tank top":
        pt.poly([(-sh * 0.45, 0.155 + stoop), (sh * 0.45, 0.155 + stoop), (0.0, 0.21)], skin)
    elif person.top_type in ("jacket", "coat") and not back:
        pt.line([(0.0, 0.17), (0.0, length)], _shade(top, 0.6), 0.008)
    elif person.top_type == "shirt" and not back:
        pt.poly([(-0.035, 0.15 + stoop), (0.035, 0.15 + stoop), (0.0, 0.19 + stoop)], _shade(top, 1.25))
    # arms
    sleeve = LONG_SLEEVES[person.top_type]
    for side, swing in ((-1, scene.arm_swing), (1, -scene.arm_swing)):
        shoulder = (side * (sh - limb * 0.4), 0.17 + stoop)
        hand = (side * (sh + 0.025) + swing * 0.02, 0.5 + abs(swing) * -0.015)
        pt.line([shoulder, hand], skin, limb * 0.85)
        if sleeve > 0:
            pt.line([shoulder, _towards(shoulder, hand, sleeve)], top, limb * 0.95)
        pt.box(hand[0] - 0.018, hand[1] - 0.01, hand[0] + 0.018, hand[1] + 0.03, skin, ellipse=True)
    # neck, head, face
    pt.box(-0.022, 0.1 + stoop, 0.022, 0.165 + stoop, _shade(skin, 0.92))
    hy = stoop
    if back:
        colour = skin if person.hair_length == "bald" else hair
        pt.box(-0.05, 0.002 + hy, 0.05, 0.128 + hy, colour, ellipse=True)
        if hair_end:
            pt.box(-0.055, 0.05 + hy, 0.055, hair_end, hair)
    else:
        if person.hair_length != "bald":
            pt.box(-0.053, -0.002 + hy, 0.053, 0.1 + hy, hair, ellipse=True)
        pt.box(-0.046, 0.012 + hy, 0.046, 0.128 + hy, skin, ellipse=True)
        if hair_end:
            pt.box(-0.058, 0.05 + hy, -0.04, hair_end * 0.92, hair)
            pt.box(0.04, 0.05 + hy, 0.058, hair_end * 0.92, hair)
        for ex in (-0.018, 0.018):
            pt.box(ex - 0.005, 0.06 + hy, ex + 0.005, 0.07 + hy, DARK, ellipse=True)
        if person.glasses:
            for ex in (-0.019, 0.019):
                pt.line([(ex - 0.013, 0.058 + hy), (ex + 0.013, 0.058 + hy), (ex + 0.013, 0.074 + hy),
                         (ex - 0.013, 0.074 + hy), (ex - 0.013, 0.058 + hy)], DARK, 0.005)
        pt.line([(-0.012, 0.1 + hy), (0.012, 0.1 + hy)], _shade(skin, 0.7), 0.005)
    _draw_head_and_neck_items(pt, person, rng, hy, front=not back)
    _draw_bags(pt, person, rng, back, sh, hi)


def _draw_head_and_neck_items(pt: _Painter, person: PersonAttributes, rng: random.Random,
                              hy: float, front: bool, side: bool = False) -> None:
    if person.scarf != "none":
        scarf = _jitter(COLOURS[person.scarf], rng)
        pt.box(-0.05 if not side else -0.035, 0.125 + hy, 0.05 if not side else 0.035, 0.17 + hy, scarf)
        if front:
            pt.box(0.012, 0.15 + hy, 0.04, 0.29 + hy, scarf)
    if person.hat != "none":
        hat = _jitter(COLOURS[person.hat], rng)
        pt.box(-0.047, -0.022 + hy, 0.047, 0.03 + hy, hat)
        brim = (-0.068, 0.022 + hy, 0.068, 0.036 + hy) if not side else (-0.05, 0.022 + hy, 0.08, 0.036 + hy)
        pt.box(*brim, _shade(hat, 0.85))


def _draw_bags(pt: _Painter, person: PersonAttributes, rng: random.Random, back: bool, sh: float,
               hi: float) -> None:
    if person.backpack != "none":
        pack = _jitter(COLOURS[person.backpack], rng)
        if back:
            pt.box(-sh * 0.78, 0.18, sh * 0.78, 0.44, pack)
            pt.box(-sh * 0.6, 0.33, sh * 0.6, 0.42, _shade(pack, 0.8))
        else:
            for side in (-1, 1):
                pt.line([(side * sh * 0.62, 0.16), (side * sh * 0.55, 0.38)], pack, 0.018)
    if person.handbag != "none":
        bag = _jitter(COLOURS[person.handbag], rng)
        side = 1 if not back else -1
        pt.line([(side * sh * 0.5, 0.16), (side * (hi + 0.05), 0.45)], _shade(bag, 0.7), 0.008)
        pt.box(side * (hi + 0.01), 0.44, side * (hi + 0.1), 0.55, bag)


def _draw_side(pt: _Painter, person: PersonAttributes, scene: Scene, rng: random.Random) -> None:
    """A person seen from the side, facing +x (the painter mirrors for the other direction)."""
    skin, top, bottom, shoe, hair = _body_colours(person, rng)
    sh, wa, hi, limb = _widths(person)
    depth = 0.62
    stoop = 0.025 if person.age == "elderly" else 0.0
    reach = scene.stride * (0.07 if person.age == "elderly" else 0.11)
    hip = (0.0, 0.5)
    legs = [((reach, 0.955), _shade(bottom, 0.8)), ((-reach, 0.955), bottom)]
    knee_y = {"shorts": 0.67, "skirt": 0.5}.get(person.bottom_type, 0.96)
    if person.backpack != "none":
        pack = _jitter(COLOURS[person.backpack], rng)
        pt.box(-sh * depth - 0.07, 0.18, -sh * depth + 0.02, 0.43, pack)
    for ankle, colour in legs:
        pt.line([hip, ankle], skin if person.bottom_type != "skirt" else _shade(skin, 0.95), limb)
        if person.bottom_type != "skirt":
            t = (knee_y - 0.5) / (ankle[1] - 0.5)
            pt.line([hip, (ankle[0] * t, knee_y)], colour, limb * 1.12)
        shoe_top = {"boots": 0.87, "sandals": 0.975}.get(person.shoe_type, 0.935)
        pt.box(ankle[0] - 0.025, shoe_top, ankle[0] + 0.055, 0.99, shoe)
    if person.bottom_type == "skirt":
        pt.poly([(-wa * depth, 0.46), (wa * depth, 0.46), (hi * 1.2, 0.71), (-hi * 1.2, 0.71)], bottom)
    else:
        pt.box(-hi * depth, 0.46, hi * depth, 0.56, bottom)
    length = TOP_LENGTH[person.top_type]
    flare = 1.3 if person.top_type == "coat" else 1.0
    pt.poly([(-sh * depth + stoop * 0.5, 0.155 + stoop), (sh * depth + stoop, 0.155 + stoop),
             (wa * depth * 1.1, 0.42), (hi * depth * flare, length), (-hi * depth * flare, length),
             (-wa * depth * 1.1, 0.42)], top)
    if person.handbag != "none":
        bag = _jitter(COLOURS[person.handbag], rng)
        pt.line([(0.0, 0.16), (-0.01, 0.45)], _shade(bag, 0.7), 0.008)
        pt.box(-0.06, 0.44, 0.05, 0.55, bag)
    shoulder = (stoop * 0.5, 0.17 + stoop)
    hand = (scene.arm_swing * 0.12, 0.49)
    pt.line([shoulder, hand], skin, limb * 0.85)
    sleeve = LONG_SLEEVES[person.top_type]
    if sleeve > 0:
        pt.line([shoulder, _towards(shoulder, hand, sleeve)], _shade(top, 0.9), limb * 0.95)
    pt.box(hand[0] - 0.018, hand[1] - 0.01, hand[0] + 0.018, hand[1] + 0.03, skin, ellipse=True)
    hx, hy = stoop * 1.2, stoop * 0.5
    pt.box(hx - 0.02, 0.1 + hy, hx + 0.02, 0.165 + hy, _shade(skin, 0.92))
    pt.box(hx - 0.045, 0.005 + hy, hx + 0.048, 0.128 + hy, skin, ellipse=True)
    pt.box(hx + 0.038, 0.06 + hy, hx + 0.056, 0.085 + hy, skin)  # nose
    if person.hair_length != "bald":
        pt.poly([(hx - 0.05, 0.08 + hy), (hx - 0.045, 0.01 + hy), (hx + 0.01, -0.004 + hy),
                 (hx + 0.045, 0.03 + hy), (hx - 0.005, 0.04 + hy), (hx - 0.015, 0.09 + hy)], hair)
        hair_end = {"long": 0.33, "shoulder-length": 0.2}.get(person.hair_length)
        if hair_end:
            pt.box(hx - 0.055, 0.04 + hy, hx - 0.02, hair_end, hair)
    pt.box(hx + 0.02, 0.058 + hy, hx + 0.03, 0.068 + hy, DARK, ellipse=True)
    if person.glasses:
        pt.line([(hx - 0.02, 0.062 + hy), (hx + 0.015, 0.062 + hy)], DARK, 0.005)
        pt.line([(hx + 0.015, 0.056 + hy), (hx + 0.04, 0.056 + hy), (hx + 0.04, 0.072 + hy),
                 (hx + 0.015, 0.072 + hy), (hx + 0.015, 0.056 + hy)], DARK, 0.005)
    _draw_head_and_neck_items(pt, person, rng, hy, front=False, side=True)


def render_person(person: PersonAttributes, scene: Scene, size: tuple[int, int],
                  rng: random.Random) -> Image.Image:
    """Draw ``person`` as seen in ``scene`` on a cluttered background; ``size`` is (height, width).

    ``rng`` supplies the background and the small colour jitter; the result is an RGB image.
    """
    height, width = size
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    _draw_background(draw, width, height, rng)
    hp = min(height, 2.9 * width) * scene.scale
    top = (height - hp) / 2 + scene.dy * height * 0.04
    cx = width / 2 + scene.dx * width * 0.08
    painter = _Painter(draw, cx, top, hp, scene.mirror)
    if scene.view == "side":
        _draw_side(painter, person, scene, rng)
    else:
        _draw_frontal(painter, person, scene, rng, back=scene.view == "back")
    gains = [scene.brightness * c for c in scene.colour_cast]
    lut = [min(255, int(v * g)) for g in gains for v in range(256)]
    image = image.point(lut)
    if scene.blur:
        image = image.filter(ImageFilter.BoxBlur(max(0.5, width / 160)))
    return image
