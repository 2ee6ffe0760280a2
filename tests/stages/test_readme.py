"""The README's quick start runs as printed: offline, on the packaged pair, in seconds."""

import contextlib
import io
import re

import pytest

from tests.conftest import REPO


def python_blocks(markdown: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.S | re.M)


def quickstart_code() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = python_blocks(section)
    assert len(blocks) == 1, "the README's quick start should hold one python block"
    return blocks[0]


def test_quickstart_is_near_the_top_of_the_readme():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 300, "the README is a front door: details go to docs/"
    head = "\n".join(lines[:150])
    assert "pip install -e ." in head and "## Quick start" in head
    assert quickstart_code().strip().splitlines()[-1] in head  # the whole example


@pytest.mark.timeout(60)
def test_readme_quickstart_runs_and_prints_what_it_says(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing in the example depends on a checkout
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(quickstart_code(), "README.md (quick start)", "exec"), {})
    text = out.getvalue()
    # the first answer, in the task's worked format, and the collaboration frequency
    assert re.search(r"The answer is -?\d+\.", text), text
    frequency = re.search(r"^collaboration frequency: (\d\.\d{3})$", text, flags=re.M)
    assert frequency, text
    assert 0 < float(frequency.group(1)) < 0.2  # the README shows 0.097 on the packaged weights


def anchors(markdown: str) -> set[str]:
    """The heading anchors GitHub makes for a Markdown text (fenced code skipped)."""
    prose = re.sub(r"^```.*?^```$", "", markdown, flags=re.S | re.M)
    headings = re.findall(r"^#+ (.+)$", prose, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_readme_and_docs_links_resolve():
    pages = [REPO / "README.md", REPO / "benchmarks/README.md", *sorted(REPO.glob("docs/*.md"))]
    for page in pages:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path = (page.parent / target) if target else page
            assert path.exists(), f"{page.name}: broken link {target}"
            if anchor and path.suffix == ".md":
                assert anchor in anchors(path.read_text()), f"{page.name}: no #{anchor} in {target}"
