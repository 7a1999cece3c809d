"""The README's config reference is generated from the dataclasses and must not drift."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_config_reference_is_current() -> None:
    spec = importlib.util.spec_from_file_location(
        "upd", ROOT / "scripts" / "update_readme_config.py"
    )
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    text = (ROOT / "README.md").read_text()
    assert mod.render(text) == text, "run: .venv/bin/python scripts/update_readme_config.py"


def test_readme_names_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
