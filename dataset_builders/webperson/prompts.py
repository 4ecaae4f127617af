"""The prompts of the pipeline, as constants (versioned with the code that uses them).

``CAPTION_INSTRUCTION`` restates the captioning instruction of docs/method.md section 9.5 in substance;
``TEMPLATE_INSTRUCTION`` asks an instruct LLM to turn a human benchmark caption into a template
(docs/method.md section 9.4). Both are ``str.format`` strings.
"""

from __future__ import annotations

__all__ = ["CAPTION_INSTRUCTION", "PLACEHOLDERS", "PROMPT_VERSION", "TEMPLATE_INSTRUCTION", "caption_prompt"]

#: Bumped whenever a prompt's wording changes; recorded in the caption stage's settings.
PROMPT_VERSION = "v1"

#: The attribute placeholders templates may use.
PLACEHOLDERS = (
    "[He/She]",
    "[His/Her]",
    "[gender]",
    "[age]",
    "[hairstyle]",
    "[hair color]",
    "[headwear]",
    "[glasses]",
    "[colored top]",
    "[colored outerwear]",
    "[colored bottom]",
    "[colored dress]",
    "[footwear]",
    "[accessory]",
    "[bag]",
    "[action]",
)

CAPTION_INSTRUCTION = """\
Write one concise caption of the pedestrian in this image.
Describe only the dominant attributes of the person: gender, clothing (top, bottom, outerwear), footwear, \
head (hair, headwear), accessories (bags, glasses, scarves and the like) and action, giving the colour of \
each part.
Use a vague colour word (such as dark, light or pale) only when you are unsure of a colour. Say a generic \
"top" or "bottom" only when the garment type is unclear.
Do not describe the background, the surroundings or other people.
Describe only what is visible: no speculation (never write "possibly", "perhaps", "seems", "appears" or \
"likely"), nothing about identity, occupation or emotion.
Follow the structure of this template and mention the most salient attributes first; replace each bracketed \
placeholder with what you see and leave out parts that do not apply:
{template}
Use at most {max_words} words and everyday phrasing. Output only the caption."""

TEMPLATE_INSTRUCTION = """\
Rewrite the description of a pedestrian below into a reusable caption template. Keep its sentence \
structure and phrasing, but replace every specific attribute with one of these placeholders: {placeholders}. \
Remove anything about the background, identity or emotion. Output only the template, on one line.
Description: {caption}"""


def caption_prompt(template: str, max_words: int = 60) -> str:
    """The captioning instruction for one crop, with its drawn ``template``."""
    return CAPTION_INSTRUCTION.format(template=template, max_words=max_words)


def template_prompt(caption: str) -> str:
    """The template-extraction instruction for one benchmark ``caption``."""
    return TEMPLATE_INSTRUCTION.format(placeholders=", ".join(PLACEHOLDERS), caption=caption)
