"""The sidebar's file paths (``ui.path_html``): the end of a long path, breakable only after a
separator, the whole path as the tooltip, Markdown characters shown as they are."""
from __future__ import annotations

import html
import re

from ldminv_app.sidebar import path_html


def _shown(markup: str) -> str:
    """The text a browser shows for ``markup`` (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def _title(markup: str) -> str:
    return html.unescape(re.search(r'title="([^"]*)"', markup)[1])


def test_a_long_path_shows_its_end_and_keeps_the_whole_path_as_tooltip():
    full = "/home/researcher/models/stable-diffusion/checkpoints/sd15-pokemon-finetune-lora-r16-step-12000"
    markup = path_html(full)
    assert _shown(markup) == "…/checkpoints/sd15-pokemon-finetune-lora-r16-step-12000"
    assert _title(markup) == full
    assert "word-break: normal" in markup  # no break inside a name unless one name is wider than the line
    # a break is offered after every separator and nowhere else
    text = re.sub(r"<code[^>]*>|</code>", "", markup)
    for piece in text.split("<wbr>")[:-1]:
        assert html.unescape(piece)[-1] in "/\\-_."


def test_short_paths_and_hub_ids_are_shown_whole():
    assert _shown(path_html("runwayml/stable-diffusion-v1-5")) == "runwayml/stable-diffusion-v1-5"
    assert _shown(path_html("/work/main/assets/demo/model")) == "/work/main/assets/demo/model"  # fits
    assert _shown(path_html("?")) == "?"


def test_markdown_and_html_characters_stay_literal():
    full = r"C:\runs\my_run*1\$x_[a]~b|c\<img src=x>"
    markup = path_html(full, max_chars=100)
    assert _shown(markup) == full and _title(markup) == full
    assert "<img" not in markup
    body = re.sub(r"<code[^>]*>|</code>|<wbr>", "", markup)
    assert not re.search(r"[\\`*_$\[\]~|<>]", body)  # every Markdown / HTML character is an entity
