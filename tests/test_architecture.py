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



def import_graph(files: dict[str, Path], bare: bool = False) -> dict[str, set[str]]:
    """{module: the modules of `files` it imports}, at the top or inside functions; `bare`: scripts that import
    their siblings by bare name (a script's own folder is sys.path[0])."""
    graph = {}
    for name, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = {f"{node.module}.{a.name}" for a in node.names}
                # `from rmsd import scoring` takes a module, as `import rmsd.scoring` does: no arrow to the face
                found |= names if names <= set(files) else {node.module, *names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that reach one another through imports (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_through_others():
    """No circle of imports in the package (an import inside a function counts: it only hides the circle) nor
    among the experiment scripts of benchmarks/."""
    package = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (ROOT / "rmsd").rglob("*.py")}
    scripts = {p.stem: p for p in (ROOT / "benchmarks").glob("*.py")}
    assert circles(import_graph(package)) == []
    assert circles(import_graph(scripts, bare=True)) == []


def test_the_circle_rule_finds_a_circle_hidden_in_a_function(tmp_path):
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from c import x\n")
    (tmp_path / "c.py").write_text("from a import y\nimport json\n")
    (tmp_path / "d.py").write_text("import a\n")
    graph = import_graph({p.stem: p for p in tmp_path.glob("*.py")}, bare=True)
    assert circles(graph) == [["a", "b", "c"]]


def test_the_circle_rule_reads_from_package_import_module_as_the_module(tmp_path):
    files = {"p": tmp_path / "p.py", "p.a": tmp_path / "a.py", "p.b": tmp_path / "b.py"}
    files["p"].write_text("def run():\n    from p.a import go\n")  # the face loads p.a on first use
    files["p.b"].write_text("X = 1\n")
    files["p.a"].write_text("from p import b\n")  # a module of p: no arrow back to the face
    assert circles(import_graph(files)) == []
    files["p.a"].write_text("from p import b, run\n")  # a name of the face itself: the circle it is
    assert circles(import_graph(files)) == [["p", "p.a"]]

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


# ----------------------------------------------------------------------------- paths named in text
TOP_FOLDERS = ("rmsd", "tests", "benchmarks", "recipes", "teachers", "docs")
# A path: a top-level folder of the repository, then one or more "/segment"s; not the tail of a
# longer path or a URL (nothing path-like right before it).
PATH_RE = re.compile(r"(?<![\w./:~-])((?:" + "|".join(TOP_FOLDERS) + r")(?:/[\w.\-]+)+/?)")
ROOT_DOC_RE = re.compile(r"(?<![\w./:~-])([A-Z][A-Z_]*\.md)\b")  # README.md, CONTRIBUTING.md, ...
TEMPLATE_MARKS = set("<>{}*[]$")  # recipes/<benchmark>/..., runs/{name}, benchmarks/*.py: patterns, not paths
OUTPUT_OPTION = re.compile(r"--(?:out|output|results)[= ]$")  # `--results benchmarks/results/x`: the run makes it
BLOCK_FILE = re.compile(r"^```\w*\n# (\S+)$", flags=re.M)  # a fenced block whose first line names the file it is


def _py_text(path: Path) -> list[tuple[int, str]]:
    """(line, text) of a Python file's comments and docstrings (bare string statements); code strings are data."""
    import io
    import tokenize

    source = path.read_text(encoding="utf-8")
    pieces = [(t.start[0], t.string) for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            pieces += [(node.lineno + i, line) for i, line in enumerate(node.value.value.splitlines())]
    return pieces


def _named_paths(path: Path) -> list[tuple[int, str]]:
    """(line, path) of every repository path the file names, by the rule of the test below."""
    if path.suffix == ".py":
        pieces = _py_text(path)
    else:
        pieces = list(enumerate(path.read_text(encoding="utf-8").splitlines(), start=1))
    found = []
    for line, text in pieces:
        for m in [*PATH_RE.finditer(text), *ROOT_DOC_RE.finditer(text)]:
            end = text[m.end():m.end() + 1]
            if TEMPLATE_MARKS & set(m[1]) or end in TEMPLATE_MARKS or text[m.end():m.end() + 3] == "...":
                continue
            if OUTPUT_OPTION.search(text[:m.start()]):
                continue
            found.append((line, m[1].rstrip(".")))
    return found


def _texts() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.yaml"], capture_output=True, text=True,
                             cwd=ROOT, check=True).stdout.split()
    return [ROOT / p for p in tracked if (ROOT / p).is_file()]


def test_text_names_only_paths_that_exist():
    """Every repository path named in a docstring or comment (`*.py`) or anywhere in a `*.md` / `*.yaml` exists.

    What counts as a path: a token that starts with a top-level folder of the repository
    (`rmsd/`, `tests/`, `benchmarks/`, `recipes/`, `teachers/`, `docs/`) and has at least one
    more `/segment`, or an upper-case root document name (`README.md`, `ARCHITECTURE.md`). It is
    read relative to the repository root. Left out: patterns and placeholders (a token holding
    or followed by `<`, `{`, `*`, `[`, `$`, or followed by `...`), the tail of a longer path or
    URL (`runs/x/rmsd/...`, `https://.../docs/...`), paths under anything else (`runs/`,
    `data/`), which runs create, the value of an output option (`--out`, `--output`,
    `--results`), which the command creates, and in a Markdown file the files its own fenced
    blocks write (a block whose first line is `# teachers/<pool>.yaml`). Python code strings
    are data, not text.
    """
    missing = []
    for path in _texts():
        written = set(BLOCK_FILE.findall(path.read_text(encoding="utf-8"))) if path.suffix == ".md" else set()
        for line, named in _named_paths(path):
            if named not in written and not (ROOT / named).exists():
                missing.append(f"{path.relative_to(ROOT)}:{line}: {named}")
    assert not missing, "text names paths that do not exist:\n" + "\n".join(missing)


def test_the_path_rule_reads_what_it_promises(tmp_path):
    source = tmp_path / "m.py"
    source.write_text('"""Reads rmsd/train/ema.py and DESIGN.md; recipes/<benchmark>/a.yaml is a pattern."""\n'
                      'OUT = "rmsd/in/code.py"  # a string in code is data; tests/x/y.py\'s test is text\n'
                      '# runs/x/rmsd/a.py, https://github.com/o/r/docs/a.md, --results benchmarks/results/new\n')
    assert sorted(_named_paths(source)) == [(1, "DESIGN.md"), (1, "rmsd/train/ema.py"), (2, "tests/x/y.py")]


def _resolves(name: str) -> bool:
    """Whether a dotted `rmsd.…` name imports: a module, then attributes (a pydantic or dataclass field counts)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            fields = {**getattr(obj, "model_fields", {}), **getattr(obj, "__dataclass_fields__", {})}
            if attr in fields and not hasattr(obj, attr):
                return True  # a field of a model: no class attribute to go on from
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_text_names_only_rmsd_names_that_import():
    """Every dotted `rmsd.…` name in a docstring or comment (`*.py`) or a `*.md` / `*.yaml` imports, as a
    module or an attribute of one: a renamed function or a moved module leaves no reader at a dead name."""
    dead = []
    for path in _texts():
        pieces = (_py_text(path) if path.suffix == ".py" else
                  enumerate(path.read_text(encoding="utf-8").splitlines(), start=1))
        for line, text in pieces:
            for name in re.findall(r"(?<![\w./-])(rmsd(?:\.[A-Za-z_]\w*)+)", text):
                if not _resolves(name):
                    dead.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert not dead, "text names rmsd names that do not import:\n" + "\n".join(dead)


def test_no_two_modules_share_a_file_name():
    """A file name says which module it is: none repeats in the package or among the scripts of benchmarks/
    (a package's `__init__.py` / `__main__.py` are its face, not a name)."""
    names: dict[str, list[str]] = {}
    for path in [*(ROOT / "rmsd").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"), *ROOT.glob("*.py")]:
        if path.name not in ("__init__.py", "__main__.py"):
            names.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    twice = {name: paths for name, paths in names.items() if len(paths) > 1}
    assert not twice, f"modules that share a file name: {twice}"
