"""The README and the docs/ pages point at things that exist: every relative link (and its
#anchor), and every repository path they name in backticks or in a command."""
import functools
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", REPO / "DATASETS.md", *(REPO / "docs").glob("*.md")])
TOP_DIRS = ("bench", "clip", "configs", "dassl", "datasets", "docs", "mmlop", "proxy", "scripts", "sweep",
            "tests", "tools", "trainers")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
DIRS = "|".join(TOP_DIRS)
PATH = re.compile(rf"(?<![\w./-])((?:{DIRS})/[\w.+/-]*[\w+]|[\w-]+\.(?:py|md|sh|toml|ini|txt))(?![\w/])")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but ``_`` and ``-`` dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.cache
def anchors(page: Path) -> set:
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def links(page: Path):
    text = FENCE.sub("", page.read_text())
    for target in LINK.findall(text):
        if not re.match(r"[a-z]+:", target):   # http(s):, mailto: ...
            yield target


# Paths the pages name that do not exist in a clone, on purpose.
NOT_IN_A_CLONE = {
    "trainers/coop_upstream.py": "a user's own copy of an upstream trainer file",
    "trainers/toyprompt.py": "the file the method guide has you create",
    "configs/trainers/ToyPrompt/vit_b16.yaml": "the config the method guide has you create",
    "bench/results_pipeline_eval_cuda.json": "written by bench/gpu.sh on a GPU machine",
}
PY_NAMES = {p.name for p in REPO.rglob("*.py") if ".git" not in p.parts}


def exists(page: Path, path: str) -> bool:
    """A repository path (a config may be named without .yaml); a bare file name (``coop.py``) is
    checked only for Python files (bare page, script and data names are also outputs and other
    projects' files: tables.md, valprep.sh)."""
    if "/" in path:
        return any((base / candidate).exists() for base in (REPO, page.parent)
                   for candidate in (path, path + ".yaml")) or path in NOT_IN_A_CLONE
    return not path.endswith(".py") or path in PY_NAMES


def named_paths(page: Path):
    text = page.read_text()
    chunks = CODE.findall(FENCE.sub("", text)) + [block for block in FENCE.findall(text)]
    for chunk in chunks:
        for path in PATH.findall(chunk):
            if not any(c in chunk for c in "*<{") or path in chunk.split():
                yield path


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(page):
    broken = []
    for target in links(page):
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, f"{page.name}: links to nothing: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_paths_exist(page):
    missing = sorted({p for p in named_paths(page) if not exists(page, p)})
    assert not missing, f"{page.name} names paths that do not exist: {missing}"
