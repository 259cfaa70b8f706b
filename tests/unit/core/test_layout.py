"""The package keeps its shape: arrows point one way, and capabilities meet only at their doors.

A capability is a folder of appliance/. Another capability may import its package, its
registration modules (REGISTRATION: what the root CLI, the lab, migrations, the console and the
portal collect) and the modules it lists in `OFFERS` in its `__init__.py`; nothing else. Like
python-zeroconf's circular-import test, every module is also imported alone in a fresh
interpreter, so a cycle that only bites in one import order is caught.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "appliance"
# Modules every capability exposes by convention (see docs/architecture.md, "Capability shape").
REGISTRATION = {"cli", "lab", "schema", "summary", "portal_views", "console_views"}
# Folders that are infrastructure for every capability, not capabilities.
INFRASTRUCTURE = {"harness", "lab"}


def capabilities(package: Path) -> list[str]:
    return sorted(p.name for p in package.iterdir()
                  if (p / "__init__.py").exists() and p.name not in INFRASTRUCTURE)


def offers(package: Path, capability: str) -> set[str]:
    """The modules a capability lists in OFFERS (a tuple of names in its __init__.py)."""
    tree = ast.parse((package / capability / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "OFFERS" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every `appliance.*` module a file imports, anywhere in it (lazy imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from appliance.fleet import payloads` imports the module appliance.fleet.payloads
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return [(line, m) for line, m in found if m.startswith("appliance.")]


def violations(package: Path) -> list[str]:
    """Imports of another capability's private modules, as 'file:line imports module'."""
    caps = set(capabilities(package))
    allowed = {cap: REGISTRATION | offers(package, cap) for cap in caps}
    problems: set[str] = set()
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        owner = rel.parts[0] if len(rel.parts) > 1 else None
        for line, module in imported_modules(path):
            parts = module.split(".")
            if len(parts) < 3 or parts[1] not in caps or parts[1] == owner:
                continue
            if (package / parts[1] / f"{parts[2]}.py").exists() and parts[2] not in allowed[parts[1]]:
                problems.add(f"{rel}:{line} imports {'.'.join(parts[:3])}, private to {parts[1]}")
    return sorted(problems)


def all_modules(package: Path) -> list[str]:
    names = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts[-1] != "__main__":
            names.append(".".join(parts))
    return names


FRESH_IMPORT = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "appliance" or m.startswith("appliance.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def fresh_import_failures(package_root: Path, modules: list[str]) -> str:
    result = subprocess.run([sys.executable, "-c", FRESH_IMPORT, *modules], cwd=package_root,
                            capture_output=True, text=True, timeout=120, check=False)
    return result.stdout.strip() if result.returncode else ""


def test_no_capability_reaches_into_another():
    assert violations(PACKAGE) == []


def test_every_module_imports_alone_in_a_fresh_interpreter():
    assert fresh_import_failures(ROOT, all_modules(PACKAGE)) == ""


def test_every_capability_has_a_docstring_saying_what_it_owns():
    for cap in capabilities(PACKAGE):
        doc = ast.get_docstring(ast.parse((PACKAGE / cap / "__init__.py").read_text()))
        assert doc and len(doc) > 40, f"appliance/{cap}/__init__.py needs a docstring"


# -- the guards themselves catch what they guard against -----------------------------------------
def make_package(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "appliance"
    for rel, text in {"__init__.py": "", **files}.items():
        path = package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return package


def test_the_guard_catches_an_import_of_a_private_module(tmp_path):
    package = make_package(tmp_path, {
        "alpha/__init__.py": '"""alpha"""\nOFFERS = ("public",)\n',
        "alpha/public.py": "",
        "alpha/private.py": "",
        "alpha/cli.py": "",
        "beta/__init__.py": '"""beta"""\n',
        "beta/ok.py": "from appliance.alpha import public\nfrom appliance.alpha.cli import x\n",
        "beta/bad.py": "def f():\n    from appliance.alpha.private import thing\n",
        "beta/bad2.py": "from appliance.alpha import private\n",
    })
    found = violations(package)
    assert found == [
        "beta/bad.py:2 imports appliance.alpha.private, private to alpha",
        "beta/bad2.py:1 imports appliance.alpha.private, private to alpha",
    ]


def test_the_guard_catches_an_import_cycle(tmp_path):
    make_package(tmp_path, {
        "alpha/__init__.py": "",
        "alpha/one.py": "from appliance.alpha.two import B\nA = 1\n",
        "alpha/two.py": "from appliance.alpha.one import A\nB = 2\n",
        "alpha/fine.py": "X = 1\n",
    })
    failures = fresh_import_failures(tmp_path, ["appliance.alpha.fine", "appliance.alpha.one"])
    assert "appliance.alpha.one: ImportError" in failures
    assert "appliance.alpha.fine" not in failures


@pytest.mark.parametrize("module", ["cli", "lab", "schema", "summary"])
def test_every_capability_registration_module_is_registered(module):
    """A capability's cli.py, lab.py, schema.py or summary.py that nobody registered would
    silently do nothing (no command, no lab part, no `appliance migrations` row, no panel)."""
    from appliance import cli
    from appliance.fleet import summaries
    from appliance.lab import runner

    if module in ("schema", "summary"):
        registered = ({s.__name__ for s in cli.SCHEMAS} if module == "schema"
                      else set(summaries.SUMMARIES))
        for cap in capabilities(PACKAGE):
            if (PACKAGE / cap / f"{module}.py").exists():
                name = f"appliance.{cap}.{module}"
                assert name in registered, f"{name} is not registered"
        return

    registered_cli = {c.callback.__module__ for group in cli.GROUPS for c in group if c.callback}
    registered_cli |= {c.__module__ for group in cli.GROUPS for c in group}
    registered_lab = {factory.__module__ for factory in runner.PARTS}
    for cap in [*capabilities(PACKAGE), "lab"]:
        if (PACKAGE / cap / f"{module}.py").exists():
            name = f"appliance.{cap}.{module}"
            if module == "cli":
                assert any(m == name for m in registered_cli), f"{name} is not in cli.GROUPS"
            elif cap != "lab":
                assert name in registered_lab, f"{name} is not in lab.runner.PARTS"
