"""The Markdown files hold together: every relative link of every tracked ``*.md`` file points at a
file or folder that exists (and at a heading that exists, when it names one), the files installed
inside the package link nowhere outside it, and the README stays a product page (at most 250
lines; the rest is in docs/)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250

# [text](target) or [text](target "title"); images too. Text may hold one level of brackets
# ([`a[0]`](x)); the target stops at whitespace or ")".
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*)?\)")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def _markdown_files() -> list[Path]:
    """Tracked ``*.md`` files, plus new ones git does not ignore (they are checked before the commit
    that adds them, not after)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "*.md"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return sorted({ROOT / name for name in out.split("\0") if name and (ROOT / name).is_file()})


def _links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link outside fenced code blocks and code spans."""
    found, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            found += [(number, m.group(1)) for m in LINK.finditer(CODE_SPAN.sub("", line))]
    return found


def test_the_markdown_files_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in _markdown_files()}
    assert {"README.md", "docs/architecture.md", "goodpoint_ros/weights/goodpoint_small.md"} <= names


def _anchors(md: Path) -> set[str]:
    """GitHub's heading anchors of ``md``: lower case, punctuation dropped, spaces to hyphens."""
    out, fenced = set(), False
    for line in md.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := HEADING.match(line)):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            n = 1
            while (slug if n == 1 else f"{slug}-{n - 1}") in out:
                n += 1
            out.add(slug if n == 1 else f"{slug}-{n - 1}")
    return out


def _relative_links() -> list[tuple[Path, int, str, Path]]:
    """(file, line, target, resolved path) of every relative link that names a path."""
    return [
        (md, number, target, md.parent / target.split("#", 1)[0].split("?", 1)[0])
        for md in _markdown_files()
        for number, target in _links(md.read_text(encoding="utf-8"))
        if not EXTERNAL.match(target) and not target.startswith("#")
    ]


def test_every_relative_link_points_at_a_file_that_exists():
    broken = []
    for md, number, target, path in _relative_links():
        if not path.exists():
            broken.append(f"{md.relative_to(ROOT)}:{number}: {target}")
        elif "#" in target and path.suffix == ".md" and target.split("#", 1)[1] not in _anchors(path):
            broken.append(f"{md.relative_to(ROOT)}:{number}: {target} (no such heading)")
    assert not broken, "broken relative links:\n" + "\n".join(broken)


def test_the_package_files_link_nowhere_outside_the_package():
    """The model cards and TRAINING_DATA.md are installed with the package, where docs/ does not exist."""
    package = ROOT / "goodpoint_ros"
    leaving = [
        f"{md.relative_to(ROOT)}:{number}: {target}"
        for md, number, target, path in _relative_links()
        if md.is_relative_to(package) and not path.resolve().is_relative_to(package)
    ]
    assert not leaving, "links that leave the installed package:\n" + "\n".join(leaving)


def test_the_link_pattern_reads_the_forms_the_docs_use():
    text = "\n".join(
        [
            "[a](docs/a.md) and [`b[0]`](b.md#part) ![pic](demo.png)",
            "[web](https://example.org) [anchor](#here) `[code](not/a/link.md)`",
            "```",
            "[fenced](not/a/link.md)",
            "```",
        ]
    )
    assert [t for _, t in _links(text)] == ["docs/a.md", "b.md#part", "demo.png", "https://example.org", "#here"]


def test_the_readme_is_at_most_250_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"
