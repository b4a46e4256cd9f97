"""Comments cite the papers by code ("001 eq. 16", "003 Table III"): every code cited in the repository resolves in
docs/glossary.md, which the README points to."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"\b(\d{3}) (?:eq|sec|Table|Tables|Algorithm|ch|Fig)\b")


def test_every_cited_paper_code_is_in_the_glossary():
    glossary = (REPO / "docs" / "glossary.md").read_text()
    defined = set(re.findall(r"^\| \*\*(\d{3})\*\* \|", glossary, re.MULTILINE))
    assert defined == {"000", "001", "003", "004"}
    files = [p for d in ("core", "service", "cli", "training", "benchmarks") for p in (REPO / d).rglob("*.py")]
    files += [REPO / "README.md", REPO / "RESULTS.md", REPO / "service" / "README.md"]
    cited: dict[str, str] = {}
    for f in files:
        for code in CITATION.findall(f.read_text(errors="replace")):
            cited.setdefault(code, f.relative_to(REPO).as_posix())
    assert {"000", "001", "003", "004"} <= set(cited)  # the scan finds the citations
    missing = {c: f for c, f in cited.items() if c not in defined}
    assert not missing, f"paper codes cited but not in docs/glossary.md: {missing}"


def test_readme_points_to_the_glossary():
    assert "docs/glossary.md" in (REPO / "README.md").read_text()
