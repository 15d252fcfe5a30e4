"""What the layout promises, read from the files: no import runs in a circle (counting imports made
inside functions too), and jobs, accounting and the Redis board exchange values of ours, never an SDK
wire type."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("server", "tools", "bench")
INSTALLED = ("server", "tools")  # installed as swarm_inference_mcp.server and swarm_inference_mcp.tools


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] in INSTALLED:
        parts.insert(0, "swarm_inference_mcp")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Our modules that `path` imports anywhere in it (a package import counts as its `__init__`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("swarm_inference_mcp", "bench")}


def graph() -> dict[str, set[str]]:
    files = {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    return {name: {dep for dep in imports(path) if dep in files and dep != name} for name, path in files.items()}


def test_no_import_runs_in_a_circle() -> None:
    edges = graph()
    assert len(edges) > 40  # the walk found the modules
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            pytest.fail("import circle: " + " -> ".join(cycle))
        if name in done:
            return
        for dep in sorted(edges[name]):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(edges):
        visit(name, [])


def wire_imports(path: Path) -> set[str]:
    """The SDK's wire-type names `path` imports (from `mcp_types`, or `mcp.types`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module in ("mcp_types", "mcp.types"):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import) and any(alias.name in ("mcp_types", "mcp.types") for alias in node.names):
            found.add("*")
    return found


def test_jobs_accounting_and_redis_know_no_wire_type() -> None:
    """A job's outcome, its record on the board and a usage row are ours; only rendering makes wire types."""
    for room in ("jobs", "accounting", "scaleout"):
        for path in (ROOT / "server" / room).rglob("*.py"):
            assert wire_imports(path) == set(), path


def builds(path: Path, name: str) -> bool:
    """Whether `path` calls `name(...)` (or `something.name(...)`) anywhere."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Name) and func.id == name) or (
                isinstance(func, ast.Attribute) and func.attr == name
            ):
                return True
    return False


def test_only_results_builds_a_tool_result() -> None:
    builders = sorted(
        path.relative_to(ROOT).as_posix()
        for package in ("server", "tools")
        for path in (ROOT / package).rglob("*.py")
        if builds(path, "CallToolResult")
    )
    assert builders == ["server/results.py"]


def test_the_providers_settings_keep_their_variables_and_flags() -> None:
    """Each provider setting is read from `<NAME>_<SETTING>` and from `--<name>-<setting>` (keys from the
    environment only) into that provider's nested settings, and nowhere else."""
    from swarm_inference_mcp.server.environment import load_settings  # noqa: PLC0415 - the rest of this file reads only files

    values = {
        "api_key": "k-0123456789abcdef",
        "base_url": "http://127.0.0.1:9/v1",
        "model": "m-1",
        "max_concurrency": "3",
        "token_budget": "11",
        "daily_token_budget": "12",
        "monthly_token_budget": "13",
    }
    for name, other in (("fortytwo", "swarms"), ("swarms", "fortytwo")):
        from_env = load_settings({f"{name.upper()}_{setting.upper()}": value for setting, value in values.items()})
        flags = {f"{name}_{setting}": value for setting, value in values.items() if setting != "api_key"}
        from_flags = load_settings({}, flags)
        for setting, value in values.items():
            got = getattr(from_env.provider(name), setting)
            assert str(got.get_secret_value() if setting == "api_key" else got) == value, (name, setting)
            if setting != "api_key":
                assert str(getattr(from_flags.provider(name), setting)) == value, (name, setting)
            assert getattr(from_env.provider(other), setting) != getattr(from_env.provider(name), setting)


def test_every_link_in_the_docs_resolves() -> None:
    """Relative links of README.md and docs/ point at files that exist (and anchors at headings)."""
    import re  # noqa: PLC0415

    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name}: {target}"
            if anchor and linked.suffix == ".md":
                headings = {
                    re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-")
                    for h in re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), re.MULTILINE)
                }
                assert anchor in headings, f"{page.name}: {target}"
