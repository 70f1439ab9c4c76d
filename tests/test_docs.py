"""The documentation stays true: docs/cli.md is what the parser says, the README stays a short page for users,
and every relative link in README.md and docs/*.md leads to a file that exists."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def _cli_reference():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "tools" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_is_generated_from_the_parser_and_up_to_date():
    expected = _cli_reference().reference()
    assert (ROOT / "docs" / "cli.md").read_text() == expected, \
        "docs/cli.md is out of date: python tools/cli_reference.py --write"


def test_the_cli_reference_names_every_command_and_option():
    from digitrec.cli import _parser

    parser = _parser()
    text = (ROOT / "docs" / "cli.md").read_text()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():
        assert f"\n## {name}\n" in text
        for action in command._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help", "--debug"):
                    assert f"`{option}`" in text, (name, option)


def test_the_readme_is_a_short_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move detail into docs/"


@pytest.mark.parametrize("page", [ROOT / "README.md", ROOT / "docs" / "model-card.md",
                                  ROOT / "docs" / "benchmarks.md"], ids=lambda p: p.name)
def test_pages_state_results_not_a_diary(page):
    text = page.read_text().lower()
    for word in ("morning", "afternoon", "evening", "this session"):
        assert word not in text, f"{page.name} says {word!r}"


def _links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    return LINK.findall(text)


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    anchors, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", FENCE.sub("", page.read_text()), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_points_to_a_file_that_exists(page):
    assert page.is_file(), page
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # a web or mail address
        path, _, anchor = target.partition("#")
        linked = (page.parent / path) if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(target)  # a heading that is not there (any more)
    assert not broken, f"{page.name} links to missing files or headings: {broken}"


def test_anchors_are_the_ones_github_makes(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Serving: `digitrec serve`\n## Choosing the model: validation figures\n## int8 export\n"
                    "## int8 export\n```\n# not a heading\n```\n")
    assert _anchors(page) == {"serving-digitrec-serve", "choosing-the-model-validation-figures", "int8-export",
                              "int8-export-1"}


def test_the_link_check_sees_links_and_images(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("![a picture](docs/x.png) and [a page](docs/y.md#part), [web](https://example.org)\n"
                    "```\n[not a link](nowhere.md)\n```\n`[code](nowhere.md)`\n")
    assert _links(page) == ["docs/x.png", "docs/y.md#part", "https://example.org"]
