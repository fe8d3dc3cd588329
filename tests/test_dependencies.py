"""setup.py names every third-party package the code imports, so ``pip install -e .`` is enough
(nothing arrives only because another package happens to depend on it).

setup.py is read, not run: its ``install_requires`` and ``extras_require`` are evaluated from
the syntax tree (list literals, ``+``, names assigned at module level, and both branches of a
conditional such as ``[] if _HAS_PADDLE else ["paddlepaddle==..."]``). Imports are mapped to
distributions with ``importlib.metadata.packages_distributions()``.
"""
import ast
import importlib.metadata
import re
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parent.parent
CODE_DIRS = ("ernie_tiny", "deploy", "tools")
FIRST_PARTY = {"ernie_tiny"}
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them (``PyYAML`` == ``pyyaml``, ``a_b`` == ``a-b``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """``tritonclient[http]==2.73.0`` -> ``tritonclient``."""
    return normalize(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1))


def requirement_strings(node: ast.AST, assigned: Dict[str, ast.AST]) -> List[str]:
    """The requirement strings an expression of setup.py can hold (every branch of a conditional)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [s for item in node.elts for s in requirement_strings(item, assigned)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return requirement_strings(node.left, assigned) + requirement_strings(node.right, assigned)
    if isinstance(node, ast.IfExp):
        return requirement_strings(node.body, assigned) + requirement_strings(node.orelse, assigned)
    if isinstance(node, ast.Name) and node.id in assigned:
        return requirement_strings(assigned[node.id], assigned)
    raise AssertionError(f"setup.py: cannot read requirements from {ast.dump(node)[:80]}")


def setup_requirements() -> Dict[str, List[str]]:
    """{"install": install_requires, "<extra>": extras_require[extra], ...}, as written in setup.py."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    assigned = {target.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Name)}
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "setup")
    keywords = {keyword.arg: keyword.value for keyword in call.keywords}
    found = {"install": requirement_strings(keywords["install_requires"], assigned)}
    extras = keywords["extras_require"]
    for key, value in zip(extras.keys, extras.values):
        found[key.value] = requirement_strings(value, assigned)
    return found


def third_party_imports(directories, local_modules: Set[str] = frozenset()) -> Dict[str, Set[str]]:
    """{top-level module: files importing it} over every .py file under ``directories``
    (absolute imports only; the standard library and our own package left out)."""
    found: Dict[str, Set[str]] = {}
    for directory in directories:
        for path in sorted((ROOT / directory).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top not in STDLIB and top not in FIRST_PARTY and top not in local_modules:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def uncovered(imports: Dict[str, Set[str]], requirements: List[str]) -> List[str]:
    """One line per imported module whose distribution no requirement names."""
    named = {requirement_name(r) for r in requirements}
    distributions = importlib.metadata.packages_distributions()
    problems = []
    for module, files in sorted(imports.items()):
        dists = distributions.get(module)
        if not dists:
            problems.append(f"{module} (imported by {', '.join(sorted(files))}) is not installed")
        elif not named & {normalize(d) for d in dists}:
            problems.append(f"{module} (imported by {', '.join(sorted(files))}) comes from {'/'.join(dists)}, "
                            "which setup.py does not name")
    return problems


def test_setup_py_is_read_as_written():
    requirements = setup_requirements()
    install = {requirement_name(r) for r in requirements["install"]}
    assert {"paddlepaddle", "paddlenlp", "fastapi", "uvicorn", "httpx", "onnx-graphsurgeon"} <= install
    # imported by onnxruntime's transformer optimizer (the fused graph), not declared by onnxruntime
    assert "sympy" in install
    assert {"pytest", "tritonclient", "schemathesis"} <= {requirement_name(r) for r in requirements["dev"]}


def test_every_import_of_the_code_is_named_in_install_requires():
    imports = third_party_imports(CODE_DIRS)
    assert {"fastapi", "uvicorn", "paddle", "sklearn", "yaml"} <= set(imports)  # the scan sees them
    requirements = setup_requirements()
    assert uncovered(imports, requirements["install"]) == []


def test_every_import_of_the_tests_is_named_in_install_requires_or_dev():
    requirements = setup_requirements()
    local = {path.stem for path in (ROOT / "tests").glob("*.py")}  # helpers the tests import from each other
    imports = third_party_imports(["tests"], local)
    assert uncovered(imports, requirements["install"] + requirements["dev"]) == []


def test_a_missing_requirement_is_reported_with_the_importing_file():
    problems = uncovered({"yaml": {"ernie_tiny/config.py"}}, ["numpy<2"])
    assert problems == ["yaml (imported by ernie_tiny/config.py) comes from PyYAML, which setup.py does not name"]


@pytest.mark.parametrize("extra", ["install", "dev"])
def test_exact_pins_match_the_installed_versions(extra):
    """An ``==`` pin that is installed is installed at that version (pins follow what was tested)."""
    mismatched = []
    for requirement in setup_requirements()[extra]:
        match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^;,\s]+)\s*", requirement)
        if not match:
            continue
        try:
            installed = importlib.metadata.version(match.group(1))
        except importlib.metadata.PackageNotFoundError:
            continue  # e.g. paddlepaddle on a machine with paddlepaddle-gpu
        if installed != match.group(2):
            mismatched.append(f"{requirement}: installed {installed}")
    assert mismatched == []
