"""Synthetic person data: the embedded default data set that lets GA-DMS run offline.

Procedurally drawn pedestrians (PIL primitives) with two benchmark-style captions per image and
controlled, recorded caption noise; identity-disjoint train / val / test splits; deterministic for a
seed. Written in the WebPerson format (parquet shards + card, ``datasets.load_dataset(folder)``) or
the CUHK-PEDES format (``reid_raw.json`` + ``imgs/``).

Example::

    from dataset_builders.synthetic import SyntheticPersonConfig, generate_records, write_webperson

    config = SyntheticPersonConfig(num_identities=50, images_per_identity=4, image_size=(96, 32))
    record = next(generate_records(config))      # dict: image (PIL), captions, person_id, split, ...
    folder = write_webperson(config, "synthetic_webperson")

Command line: ``python -m dataset_builders.synthetic --help``.
"""
from .attributes import ATTRIBUTE_NAMES, PersonAttributes, sample_identities
from .captions import ATTRIBUTE_WORDS, NOISE_KINDS, Caption, NoiseEvent, make_caption, tokenize
from .config import SPLITS, SyntheticPersonConfig, held_out_fractions
from .generator import generate_records, image_path
from .hf import to_dataset_dict
from .render import Scene, render_person, sample_scene
from .schema import HF_SPLIT_NAMES, features
from .writers import WRITERS, webperson_folder, write_cuhk_pedes, write_webperson

__all__ = [
    "ATTRIBUTE_NAMES",
    "ATTRIBUTE_WORDS",
    "Caption",
    "HF_SPLIT_NAMES",
    "NOISE_KINDS",
    "NoiseEvent",
    "PersonAttributes",
    "SPLITS",
    "Scene",
    "SyntheticPersonConfig",
    "WRITERS",
    "features",
    "generate_records",
    "held_out_fractions",
    "image_path",
    "make_caption",
    "render_person",
    "sample_identities",
    "sample_scene",
    "to_dataset_dict",
    "tokenize",
    "webperson_folder",
    "write_cuhk_pedes",
    "write_webperson",
]
