"""The code's structure as tests: no import cycle between files, no private name taken
across modules, no file over 600 lines, the core never imports parallel/; and what issue 22's
one assembly line promised: one place makes a Trainer (tinyllm/build.py), nothing outside
finetuning imports the LoRA adapter, and the retired hooks are gone.

Run as a script to list every violation at once:

    python tests/test_architecture.py

How it reads the code (ast only, nothing is imported):
- an import edge goes from a file to the file it names: `from tinyllm import checkpoint`
  -> tinyllm/checkpoint.py (a submodule), `from tinyllm.model import GPT` ->
  tinyllm/model.py, `from tinyllm import GPT` -> tinyllm/__init__.py; imports inside
  functions count too (a cycle hidden in a function is still a cycle);
- a private name is `_x` (one leading underscore). It is "taken across modules" when a
  file imports it from another project file, or reads or writes `something._x` where `_x`
  is not defined in that file (as a function, class, assignment or `self._x = ...`);
  A few private names of the standard library's public API are allowed (`sys._getframe`,
  namedtuple's `_replace`, ...);
- "the core" is autograd/ and tinyllm/ except the command line (tinyllm/cli.py,
  tinyllm/commands/), which sits above parallel/ and may choose it as a strategy.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("autograd", "tinyllm", "parallel")
MAX_LINES = 600
TRAINER_MAKER = "tinyllm/build.py"                                      # build_run: the one assembly line
LORA_USERS = ("tinyllm/lora.py", "tinyllm/finetune/", "tinyllm/commands/finetune.py")   # finetuning
RETIRED = ("optimizer.parallel", "PIPELINE_SCHEDULES", "BUBBLE_FORMULAS", "user_errors", "TINYLLM_PIPELINE_FAIL")
STDLIB_PRIVATE_API = {"_exit", "_getframe", "_replace", "_asdict", "_fields", "_make", "_current_frames"}


def project_files() -> list:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _file_of(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    package = package[:len(package) - node.level + 1]
    return ".".join(package + ([node.module] if node.module else []))


def imports(path: Path, tree: ast.AST) -> list:
    """[(imported file, names taken from it, line)] for every import of a project file."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _file_of(alias.name)
                if target is not None:
                    found.append((target, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(path, node)
            if module.split(".")[0] not in PACKAGES:
                continue
            names = []
            for alias in node.names:
                submodule = _file_of(f"{module}.{alias.name}")
                if submodule is not None:
                    found.append((submodule, [], node.lineno))
                else:
                    names.append(alias.name)
            target = _file_of(module)
            if names and target is not None:
                found.append((target, names, node.lineno))
    return found


def _defined_private_names(tree: ast.AST) -> set:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del))
              and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            names.add(node.attr)  # `self._x = ...`; `other._x = ...` writes someone else's private name
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    for node in ast.walk(tree):  # __slots__ = ("_x", ...) and getattr/setattr by string
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("_"):
            names.add(node.value)
    return {n for n in names if n.startswith("_")}


def _is_core(rel: str) -> bool:
    """autograd/ and tinyllm/ below the command line (which may pick parallel/ as a strategy)."""
    return rel.startswith(("autograd/", "tinyllm/")) and not rel.startswith(("tinyllm/commands/", "tinyllm/cli.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def violations() -> dict:
    """{"cycles": [...], "private": [...], "long": [...], "core_imports_parallel": [...], "trainers": [...],
    "lora_imports": [...], "retired": [...]}."""
    graph, private, long_files, upward, trainers, lora, retired = {}, [], [], [], [], [], []
    for path in project_files():
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        rel = path.relative_to(ROOT).as_posix()
        lines = source.count("\n")
        if lines > MAX_LINES:
            long_files.append(f"{rel}: {lines} lines")
        retired += [f"{rel}: {name}" for name in RETIRED if name in source]
        trainers += [f"{rel}:{node.lineno}" for node in ast.walk(tree) if isinstance(node, ast.Call)
                     and isinstance(node.func, ast.Name) and node.func.id == "Trainer"
                     and rel != TRAINER_MAKER]
        edges = graph.setdefault(path, set())
        for target, names, line in imports(path, tree):
            if target != path:
                edges.add(target)
            for name in names:
                if _private(name) and target != path:
                    private.append(f"{rel}:{line}: imports {name} from {target.relative_to(ROOT).as_posix()}")
            if _is_core(rel) and target.relative_to(ROOT).parts[0] == "parallel":
                upward.append(f"{rel}:{line}: imports {target.relative_to(ROOT).as_posix()}")
            if target.relative_to(ROOT).as_posix() == "tinyllm/lora.py" and not rel.startswith(LORA_USERS):
                lora.append(f"{rel}:{line}: imports tinyllm/lora.py")
        own = _defined_private_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
                if node.attr in STDLIB_PRIVATE_API:
                    continue
                private.append(f"{rel}:{node.lineno}: reads .{node.attr}, defined in another module")
    return {"cycles": _cycles(graph), "private": private, "long": long_files, "core_imports_parallel": upward,
            "trainers": trainers, "lora_imports": lora, "retired": retired}


def _cycles(graph: dict) -> list:
    """Strongly connected components of more than one file (Tarjan, iterative)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(" <-> ".join(sorted(p.relative_to(ROOT).as_posix() for p in component)))
    return components


def test_no_import_cycles():
    assert violations()["cycles"] == []


def test_no_private_names_across_modules():
    assert violations()["private"] == []


def test_no_file_over_600_lines():
    assert violations()["long"] == []


def test_core_never_imports_parallel():
    assert violations()["core_imports_parallel"] == []


def test_one_place_makes_a_trainer():
    """Every run is assembled by tinyllm.build.build_run; no other module (tests aside) calls Trainer(...)."""
    assert violations()["trainers"] == []
    assert "Trainer(model, recipe.task" in (ROOT / TRAINER_MAKER).read_text()


def test_nothing_outside_finetuning_imports_lora():
    assert violations()["lora_imports"] == []


def test_the_retired_hooks_are_gone():
    """optimizer.parallel, PIPELINE_SCHEDULES, BUBBLE_FORMULAS, user_errors, TINYLLM_PIPELINE_FAIL."""
    assert violations()["retired"] == []


def test_the_checker_sees_a_cycle_and_a_private_name(tmp_path, monkeypatch):
    """The checker itself can fail: a planted cycle and a planted private import are reported."""
    pkg = tmp_path / "tinyllm"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from tinyllm.b import _hidden\n")
    (pkg / "b.py").write_text("from tinyllm import a\n_hidden = 1\ntrainer = Trainer(1)\n")
    (pkg / "lora.py").write_text("")
    (pkg / "decode.py").write_text("from tinyllm.lora import x  # optimizer.parallel\n")
    (tmp_path / "autograd").mkdir()
    (tmp_path / "parallel").mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = violations()
    assert found["cycles"] == ["tinyllm/a.py <-> tinyllm/b.py"]
    assert found["private"] == ["tinyllm/a.py:1: imports _hidden from tinyllm/b.py"]
    assert found["trainers"] == ["tinyllm/b.py:3"]
    assert found["lora_imports"] == ["tinyllm/decode.py:1: imports tinyllm/lora.py"]
    assert found["retired"] == ["tinyllm/decode.py: optimizer.parallel"]


if __name__ == "__main__":
    found = violations()
    for kind, items in found.items():
        print(f"{kind}: {len(items)}")
        for item in items:
            print(f"  {item}")
    sys.exit(1 if any(found.values()) else 0)
