"""The docs hold together: links and anchors resolve, the README stays a front page, docs/ files open with contents."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]

_FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)
_INDENTED = re.compile(r"^(?: {4}|\t).*$", re.M)
_CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
# [text](target "title"), ![alt](target); the text may hold code spans, already blanked.
_MD_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_LINK = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']*)["']""", re.I)
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)  # http:, https:, mailto:, …


def _prose(text: str) -> str:
    """``text`` without fenced or indented code blocks, with code spans blanked."""
    text = _FENCE.sub("", text)
    text = _INDENTED.sub("", text)
    return _CODE_SPAN.sub(lambda m: "`" + "x" * (len(m.group(0)) - 2) + "`", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation but ``-`` and ``_`` dropped, spaces to ``-``."""
    text = re.sub(r"<[^>]+>", "", heading)  # inline HTML
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every ``#anchor`` GitHub makes for ``path``'s headings (repeats get ``-1``, ``-2``…)."""
    seen: dict[str, int] = {}
    found = set()
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    for match in _HEADING.finditer(text):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """The link and image targets in ``path``'s prose (not in code)."""
    text = _prose(path.read_text(encoding="utf-8"))
    return [m.group(1) for m in (*_MD_LINK.finditer(text), *_HTML_LINK.finditer(text))]


def test_slug_follows_github() -> None:
    assert slug("`POST /api/chat`") == "post-apichat"
    assert slug("`POST /v1/chat/completions`, `GET /v1/models`") == "post-v1chatcompletions-get-v1models"
    assert slug("What a model's answer cannot do") == "what-a-models-answer-cannot-do"
    assert slug("Redis: several workers and hosts") == "redis-several-workers-and-hosts"
    assert slug("gunicorn without `gunicorn.conf.py`") == "gunicorn-without-gunicornconfpy"
    assert slug("SLUICE_REDIS_URL") == "sluice_redis_url"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if not target or _EXTERNAL.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
            continue
        if fragment:
            if dest.suffix != ".md":
                broken.append(f"{target}: an anchor into a file that is not Markdown")
            elif unquote(fragment).lower() not in anchors(dest):
                broken.append(f"{target}: no heading #{fragment} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_readme_is_a_front_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; move detail into docs/"
    head = "\n".join(lines[:40])
    assert "make run" in head and "make test" in head


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_docs_open_with_a_table_of_contents(page: Path) -> None:
    """After the title (and at most a short introduction): a list of links to every ``##`` section."""
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# "), f"{page.name} starts with its title"
    preamble = _FENCE.sub("", text).split("\n## ", 1)[0]
    toc = re.findall(r"^- \[.*?\]\(#([^)]+)\)", preamble, re.M)
    assert toc, f"{page.name}: no table of contents before the first section"
    first_item = preamble.index("\n- [")
    assert preamble[:first_item].count("\n\n") <= 2, (
        f"{page.name}: the contents come after a short introduction at most"
    )
    sections = {slug(m.group(2)) for m in _HEADING.finditer(_FENCE.sub("", text)) if m.group(1) == "##"}
    assert sections <= set(toc), f"{page.name}: the contents miss {sorted(sections - set(toc))}"
