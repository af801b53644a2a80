"""The documentation: README.md and docs/*.md link only to files and headings that exist, the
README stays a short front page with a map of every docs page, and nothing in the repository
cites a document the reader does not have (a specification, an issue tracker's numbers)."""
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
README_MAX_LINES = 300

# A specification named as a document or by section number, or an issue by its number (examples in
# test_internal_reference_pattern, written in parts so that this file does not cite them itself).
INTERNAL_REFERENCE = re.compile(r"\bSPEC\b|(?i:\bspec\s+(?:section\s+)?\d+[a-z]?\b)|(?i:\bissues?\s+#?\d+)")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".ini", ".sh", ".html", ".js", ".css"}
TEXT_NAMES = {"Makefile", ".gitignore"}
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose_lines(text: str):
    """The lines outside fenced code blocks, with inline code spans blanked (links and headings
    are read from these only: a `# comment` in a shell block is not a heading)."""
    inside = False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            yield re.sub(r"`[^`]*`", "``", line)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set:
    """Every heading anchor of a Markdown page, duplicates numbered as GitHub numbers them."""
    seen, result = {}, set()
    inside = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m and not inside:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            result.add(base if n == 0 else f"{base}-{n}")
    return result


def links(page: Path):
    """``(line number, target)`` of every Markdown link and image of a page, outside code."""
    inside = False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            for m in LINK.finditer(re.sub(r"`[^`]*`", "``", line)):
                yield number, m.group(1)


def test_slug_follows_github():
    assert slug("Builder speed (2-core CPU, `python scripts/benchmark_builders.py`)") == \
        "builder-speed-2-core-cpu-python-scriptsbenchmark_builderspy"
    assert slug("Train against test: is it memorising?") == "train-against-test-is-it-memorising"


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_every_relative_link_and_image_resolves(page):
    broken = []
    for number, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not a file of the repository
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{page.name}:{number}: {target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{page.name}:{number}: {target} (no heading #{anchor} in {file.name})")
    assert not broken, "\n".join(broken)


def test_readme_is_a_short_front_page_with_a_map_of_the_docs():
    readme = REPO / "README.md"
    lines = readme.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    linked = {(readme.parent / t.partition("#")[0]).resolve() for _, t in links(readme)}
    unlinked = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert len(PAGES) > 1 and not unlinked, f"docs pages missing from the README's map: {unlinked}"
    assert "make demo" in "\n".join(lines) and "make test" in "\n".join(lines)


def repository_text_files():
    """The repository's text files, leaving out what .gitignore names as folders (the virtual
    environment, data, checkpoints, run outputs) and .git."""
    ignored = {".git"}
    for entry in (REPO / ".gitignore").read_text().splitlines():
        entry = entry.strip()
        if entry.endswith("/") and "*" not in entry:
            ignored.add(entry.strip("/"))
    for root, dirs, files in os.walk(REPO):
        rel_root = Path(root).relative_to(REPO).as_posix()
        dirs[:] = [d for d in dirs if d not in ignored and (Path(rel_root) / d).as_posix() not in ignored
                   and not d.endswith(".egg-info")]
        for name in files:
            path = Path(root) / name
            if path.suffix in TEXT_SUFFIXES or name in TEXT_NAMES:
                yield path


def test_internal_reference_pattern():
    spec, issue = "spec", "issue"
    for cited in [f"{spec.upper()} 12a", f"see {spec.upper()}.md", f"{spec.upper()} section 12", f"({spec} 4b)", f"{issue} 26",
                  f"{issue.title()} #8", f"{issue}s 3"]:
        assert INTERNAL_REFERENCE.search(cited), cited
    for fine in ["SPECIAL_TOKENS", "spec = option", "the issue's case", "spec.split(',')", "--dataset-dirs {spec}"]:
        assert not INTERNAL_REFERENCE.search(fine), fine


def test_nothing_cites_a_specification_or_an_issue_number():
    this_file = Path(__file__).resolve()
    found = []
    for path in repository_text_files():
        if path.resolve() == this_file:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if INTERNAL_REFERENCE.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:100]}")
    assert not found, "\n".join(found)
