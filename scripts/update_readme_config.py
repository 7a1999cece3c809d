"""Regenerate the README's configuration reference from the config dataclasses."""

from __future__ import annotations

import re
from pathlib import Path

from pdn_perception.core.config import reference_markdown

BEGIN, END = "<!-- CONFIG-REFERENCE:BEGIN -->", "<!-- CONFIG-REFERENCE:END -->"


def render(text: str) -> str:
    block = f"{BEGIN}\n{reference_markdown()}\n{END}"
    return re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)


if __name__ == "__main__":
    readme = Path(__file__).resolve().parents[1] / "README.md"
    readme.write_text(render(readme.read_text()))
    print(f"updated {readme}")
