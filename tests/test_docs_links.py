"""Every relative link in README.md and docs/*.md leads somewhere: the file exists
in the repository, and an anchor names a heading of that file (GitHub's slugs).
A page moved or a heading renamed breaks this test, not a reader's click."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+).*?\1")
# [text](target) and ![alt](target); the text may itself hold a `code span`.
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def _prose_lines(text: str):
    """The lines outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation
    other than '-' and '_' dropped, each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _prose_lines(page.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")  # GitHub numbers repeated headings
    return out


def relative_links(page: Path) -> list[str]:
    links = []
    for line in _prose_lines(page.read_text()):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            links.append(target)
    return links


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.is_relative_to(root):
            problems.append(f"{target}: outside the repository")
        elif not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            problems.append(f"{target}: no heading #{anchor} in {dest.relative_to(root)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves_to_a_file_and_heading(page):
    assert relative_links(page) or page.name != "README.md", "the README links to nothing: the walk is broken"
    assert broken_links(page) == [], f"{page.relative_to(ROOT)}"


def test_the_checker_catches_a_missing_file_a_missing_heading_and_a_way_out(tmp_path):
    tmp_path = tmp_path.resolve()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## The roles and the wire\n\n## `make demo`, in full\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md#the-roles-and-the-wire) [ok](docs/a.md#make-demo-in-full) [ok](#top)\n"
        "# Top\n"
        "[gone](docs/b.md) [no heading](docs/a.md#roles) [out](../elsewhere.md) [web](https://example.com)\n"
        "`[in code](nowhere.md)`\n"
        "```\n[in a fence](nowhere.md)\n## not a heading\n```\n"
        "[fenced heading](#not-a-heading)\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "docs/b.md: no such file",
        "docs/a.md#roles: no heading #roles in docs/a.md",
        "../elsewhere.md: outside the repository",
        "#not-a-heading: no heading #not-a-heading in README.md",
    ]


def test_github_slugs():
    assert github_slug("Operating the fleet: overview, router admin, logs, Flower") == \
        "operating-the-fleet-overview-router-admin-logs-flower"
    assert github_slug("The two commands in full: `make demo` and `make test`") == \
        "the-two-commands-in-full-make-demo-and-make-test"
    assert github_slug("Route-then-submit (`direct=True`, `--direct`)") == "route-then-submit-directtrue---direct"
    assert github_slug("snake_case stays") == "snake_case-stays"
