"""Generation settings of the synthetic person data set, checked when the object is made."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .captions import NOISE_KINDS

#: Split names as in CUHK-PEDES (``reid_raw.json``); the WebPerson format calls ``val`` ``validation``.
SPLITS: tuple[str, ...] = ("train", "val", "test")


def held_out_fractions(num_identities: int, held_out: int) -> tuple[float, float, float]:
    """``split_fractions`` that hold ``held_out`` persons out for validation and as many for test, the rest for
    training (rounded to 8 decimals).

    Raises:
        ValueError: when ``num_identities`` does not exceed ``2 * held_out`` (nothing would be left to train on).
    """
    if num_identities <= 2 * held_out:
        raise ValueError(f"{num_identities} identities must exceed twice the {held_out} held-out persons: validation "
                         "and test persons are held out of training")
    held = held_out / num_identities
    return round(1 - 2 * held, 8), round(held, 8), round(held, 8)


@dataclass(frozen=True)
class SyntheticPersonConfig:
    """How many identities and images to draw, how big, how noisy, and how to split them.

    Attributes:
        num_identities: number of persons (ids 1 .. ``num_identities``).
        images_per_identity: pictures per person (they differ in view, pose, background, framing).
        image_size: ``(height, width)`` in pixels; 384 x 128 is the benchmarks' size, 96 x 32 works.
        noise_rate: probability that a caption gets noise (one kind, sometimes two).
        noise_kinds: the kinds of noise to draw from (of ``captions.NOISE_KINDS``).
        seed: everything (identities, pictures, captions, noise) is a function of the seed.
        split_fractions: fractions of identities for train / val / test (identity-disjoint splits;
            train gets the lowest ids, then val, then test, as in CUHK-PEDES).
        jpeg_quality: JPEG quality of the written images (1 .. 95).

    Raises:
        ValueError: on an invalid setting, with a message saying which and why.
    """

    num_identities: int = 500
    images_per_identity: int = 4
    image_size: tuple[int, int] = (384, 128)
    noise_rate: float = 0.3
    noise_kinds: tuple[str, ...] = NOISE_KINDS
    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        # normalise sequences given as lists (e.g. from JSON) to tuples, then check everything
        object.__setattr__(self, "image_size", tuple(self.image_size))
        object.__setattr__(self, "noise_kinds", tuple(self.noise_kinds))
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))
        _check_int("num_identities", self.num_identities, 1)
        _check_int("images_per_identity", self.images_per_identity, 1)
        _check_int("seed", self.seed, 0)
        _check_int("jpeg_quality", self.jpeg_quality, 1, 95)
        if len(self.image_size) != 2:
            raise ValueError(f"image_size must be (height, width), got {self.image_size!r}")
        _check_int("image height", self.image_size[0], 24)
        _check_int("image width", self.image_size[1], 8)
        if isinstance(self.noise_rate, bool) or not isinstance(self.noise_rate, (int, float)) \
                or not 0.0 <= self.noise_rate <= 1.0:
            raise ValueError(f"noise_rate must be a number in [0, 1], got {self.noise_rate!r}")
        unknown = [k for k in self.noise_kinds if k not in NOISE_KINDS]
        if unknown or len(set(self.noise_kinds)) != len(self.noise_kinds):
            raise ValueError(
                f"noise_kinds must be distinct names of {list(NOISE_KINDS)}, got {list(self.noise_kinds)}")
        if self.noise_rate > 0 and not self.noise_kinds:
            raise ValueError("noise_rate > 0 needs at least one noise kind")
        fractions = self.split_fractions
        if len(fractions) != 3 or any(not math.isfinite(f) or f < 0 for f in fractions) \
                or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6) or fractions[0] <= 0:
            raise ValueError(
                "split_fractions must be three non-negative numbers (train, val, test) summing to 1 with "
                f"train > 0, got {fractions}")
        self.split_counts()  # raises when there are too few identities for the splits

    def split_counts(self) -> dict[str, int]:
        """Identities per split; a split with a fraction above zero gets at least one identity."""
        n = self.num_identities
        counts = {}
        for name, fraction in zip(SPLITS[1:], self.split_fractions[1:]):
            counts[name] = max(1, round(n * fraction)) if fraction > 0 else 0
        train = n - counts["val"] - counts["test"]
        if train < 1:
            raise ValueError(
                f"{n} identities are too few for split_fractions {self.split_fractions}: every split with a "
                "non-zero fraction needs at least one identity")
        return {"train": train, **counts}

    def split_ids(self) -> dict[str, range]:
        """The person ids (1-based) of each split: contiguous ranges, train first."""
        out, start = {}, 1
        for name, count in self.split_counts().items():
            out[name] = range(start, start + count)
            start += count
        return out

    @property
    def num_images(self) -> int:
        return self.num_identities * self.images_per_identity

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly settings (lists for tuples); ``SyntheticPersonConfig(**d)`` rebuilds it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
