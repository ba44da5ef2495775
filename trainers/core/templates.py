"""Prompt templates (data): per-dataset zero-shot templates and CLIP's ImageNet ensembles.

* ``CUSTOM_TEMPLATES``: the single hand-written template per dataset used by CoOp's zero-shot
  CLIP, keyed by ``DATASET.NAME``; ``dataset_template(name)`` falls back to
  ``DEFAULT_TEMPLATE`` for datasets not in the table (e.g. ``SyntheticShapes``).
* ``IMAGENET_TEMPLATES``: CLIP's 80 ImageNet prompt-engineering templates, in their published order.
* ``IMAGENET_TEMPLATES_SELECT``: the 7-template subset used by CoOp's ``ZeroshotCLIP2``.
* ``IMAGENET_TEMPLATES_60``: PromptSRC's 60-template list (also MMLoP's text anchor):
  "a photo of a {}." followed by templates 1-60 of the 80 with #40 ("a photo of a {}.") removed.
"""
from __future__ import annotations

DEFAULT_TEMPLATE = "a photo of a {}."

CUSTOM_TEMPLATES: dict[str, str] = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}

IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.",
    "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.",
    "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.", "the plastic {}.",
    "a photo of the cool {}.", "a close-up photo of a {}.", "a black and white photo of the {}.",
    "a painting of the {}.", "a painting of a {}.", "a pixelated photo of the {}.",
    "a sculpture of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.",
    "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.",
    "a close-up photo of the {}.", "a photo of a {}.", "the origami {}.",
    "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.",
    "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.",
    "art of a {}.", "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.",
    "itap of the {}.", "a jpeg corrupted photo of the {}.", "a good photo of a {}.",
    "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.",
    "a dark photo of a {}.", "itap of a {}.", "graffiti of the {}.", "a toy {}.",
    "itap of my {}.", "a photo of a cool {}.", "a photo of a small {}.", "a tattoo of the {}.",
)

IMAGENET_TEMPLATES_SELECT: tuple[str, ...] = (
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
)

IMAGENET_TEMPLATES_60: tuple[str, ...] = (DEFAULT_TEMPLATE,) + tuple(
    t for i, t in enumerate(IMAGENET_TEMPLATES[:60], start=1) if i != 40)


def dataset_template(dataset_name: str) -> str:
    """CoOp's zero-shot template for ``DATASET.NAME``, or "a photo of a {}." if it has none."""
    return CUSTOM_TEMPLATES.get(dataset_name, DEFAULT_TEMPLATE)


def fill(template: str, classname: str) -> str:
    """``template`` with ``{}`` replaced by ``classname`` (underscores become spaces)."""
    return template.format(classname.replace("_", " "))
