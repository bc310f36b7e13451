"""ARCHITECTURE.md is the module contract, and these tests hold the code to it: every module is
listed with the units it imports, every import points down the layers, every `rmsd.…` name the
page promises imports, and the docs link only files inside the repository."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
ALWAYS = {"errors"}  # every layer may raise RmsdError; the page leaves it out of the import column


def layers() -> dict[str, int]:
    """{unit: layer} from the fenced block of the page's "## Layers" section."""
    section = PAGE.split("\n## Layers\n", 1)[1]
    block = section.split("```", 2)[1]
    ranks = {}
    for line in block.splitlines():
        m = re.fullmatch(r"\s*(\d+)\s+([a-z_, ]+)", line)
        if m:
            ranks.update({u.strip(): int(m[1]) for u in m[2].split(",")})
    return ranks


def table() -> dict[str, set[str]]:
    """{module path: units it imports} from the page's module table."""
    rows = re.findall(r"^\| `(rmsd/[\w/]+\.py)` \| [^|]+ \| ([^|]+) \|$", PAGE, flags=re.M)
    return {path: set() if units.strip() == "-" else {u.strip() for u in units.split(",")} for path, units in rows}


def unit_of(module: str) -> str:
    return module.split(".")[1]


def imported_units(path: Path) -> set[str]:
    """Units of rmsd a file imports, at the top or inside functions, its own unit and ALWAYS left out."""
    units = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "rmsd":
                units |= {a.name for a in node.names}
            elif node.module.startswith("rmsd."):
                units.add(unit_of(node.module))
        elif isinstance(node, ast.Import):
            units |= {unit_of(a.name) for a in node.names if a.name.startswith("rmsd.")}
    own = unit_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return units - {own} - ALWAYS


def modules() -> list[Path]:
    """Every module of the package with code in it (empty `__init__.py` files are no modules)."""
    return sorted(p for p in (ROOT / "rmsd").rglob("*.py") if p.read_text(encoding="utf-8").strip())


def test_every_module_is_listed_once_and_every_listed_module_exists():
    listed = table()
    files = {str(p.relative_to(ROOT)) for p in modules()}
    assert not files - set(listed), f"add a row to ARCHITECTURE.md's module table for {sorted(files - set(listed))}"
    assert not set(listed) - files, f"ARCHITECTURE.md lists modules that do not exist: {sorted(set(listed) - files)}"


def test_each_row_names_the_units_its_module_imports():
    listed = table()
    wrong = {path: (sorted(listed[path]), sorted(imported_units(ROOT / path)))
             for path in listed if (ROOT / path).is_file() and listed[path] != imported_units(ROOT / path)}
    assert not wrong, "ARCHITECTURE.md's 'imports from' column (page, code): " + "; ".join(
        f"{p}: {page} != {code}" for p, (page, code) in wrong.items())


def test_imports_point_down_the_layers():
    rank = layers()
    units = {unit_of(".".join(p.relative_to(ROOT).with_suffix("").parts)) for p in modules()}
    assert not units - set(rank), f"units missing from ARCHITECTURE.md's layers: {sorted(units - set(rank))}"
    up = []
    for path in modules():
        own = unit_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for target in imported_units(path):
            if rank[target] >= rank[own]:
                up.append(f"{path.relative_to(ROOT)} ({own}, layer {rank[own]}) imports {target} (layer {rank[target]})")
    assert not up, "imports that do not point down: " + "; ".join(up)


def promised_names() -> list[str]:
    prose = re.sub(r"```.*?```", "", PAGE, flags=re.S)  # fenced blocks hold no promises
    spans = re.findall(r"`([^`]+)`", prose)  # an inline span may wrap onto the next line
    return sorted({name for span in spans for name in re.findall(r"\brmsd(?:\.[A-Za-z_]\w*)+", span)})


def resolve(name: str):
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):  # the longest prefix that is a module, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(name)


def test_the_page_promises_names_at_all():
    names = promised_names()
    assert "rmsd.models.build_student" in names and len(names) > 20


@pytest.mark.parametrize("name", promised_names())
def test_every_promised_name_imports(name):
    try:
        resolve(name)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"ARCHITECTURE.md names `{name}`, which does not import: {e}")


def test_package_faces_load_nothing_heavy_until_used():
    code = ("import sys, rmsd.models, rmsd.judge; "
            "heavy = [m for m in ('torch', 'transformers', 'rmsd.models.offline.tiny', 'rmsd.judge.llm') if m in sys.modules]; "
            "assert not heavy, heavy; "
            "from rmsd.models import build_student; from rmsd.judge import RuleJudge; "
            "from rmsd.models import lora, shared_prefix")  # submodules still import through the face
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr


DOCS = [ROOT / "ARCHITECTURE.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_link_only_files_inside_the_repository(doc):
    text = doc.read_text(encoding="utf-8")
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://|#|mailto:", target):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            bad.append(target)
    assert not bad, f"{doc.name} links outside the repository or to missing files: {bad}"
    assert "../shared" not in text, f"{doc.name} names a file outside the repository (../shared)"
