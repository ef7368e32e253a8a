"""The figures of docs/derivations/: figures/draw.py runs, writes well-formed SVG, the committed
files are exactly what it draws, and every figure a page links to exists (and is linked)."""
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

DERIVATIONS = Path(__file__).resolve().parents[2] / "docs" / "derivations"
FIGURES = DERIVATIONS / "figures"
SVG_NS = "{http://www.w3.org/2000/svg}"


def test_draw_writes_valid_svg_files_equal_to_the_committed_ones(tmp_path):
    subprocess.run([sys.executable, str(FIGURES / "draw.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True, text=True)
    drawn = sorted(p.name for p in tmp_path.glob("*.svg"))
    assert drawn == sorted(p.name for p in FIGURES.glob("*.svg")), "draw.py and the committed figures differ in names"
    assert len(drawn) >= 5
    for name in drawn:
        root = ET.parse(tmp_path / name).getroot()
        assert root.tag == SVG_NS + "svg", f"{name}: root element is {root.tag}, not <svg>"
        assert root.get("viewBox") and len(root) > 2, f"{name}: no viewBox or no content"
        assert (tmp_path / name).read_bytes() == (FIGURES / name).read_bytes(), (
            f"docs/derivations/figures/{name} is not what draw.py draws: run "
            "`python docs/derivations/figures/draw.py` and commit the result")


def test_pages_link_to_existing_figures_and_every_figure_is_shown():
    linked = set()
    for page in DERIVATIONS.glob("*.md"):
        for target in re.findall(r"\]\((figures/[^)]+\.svg)\)", page.read_text(encoding="utf-8")):
            assert (DERIVATIONS / target).is_file(), f"{page.name} links to {target}, which does not exist"
            linked.add(Path(target).name)
    assert linked == {p.name for p in FIGURES.glob("*.svg")}, "a figure no page shows, or a page without its figure"
