"""Build the Claude Desktop bundle: `python bundle/build.py` writes `dist/swarm-inference-mcp-<version>.mcpb`.

The bundle is an MCPB of `server.type: "uv"`: the manifest, the icon, and the project itself (pyproject,
README, LICENSE, `server/`, `tools/`, `.package/`), from which the host's `uv` builds an environment on first start.
`mcpb validate` and `mcpb pack` of `@anthropic-ai/mcpb` check and pack it (through `npx` unless `--mcpb`
names the command).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if sys.version_info < (3, 11):  # noqa: UP036 - before tomllib: one sentence, not an ImportError
    raise SystemExit(
        f"bundle/build.py needs Python 3.11 or newer, as the package does (this is {sys.version.split()[0]})."
    )

import tomllib

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "bundle"
MCPB = "npx --yes @anthropic-ai/mcpb@2.1.2"
PROJECT_FILES = ("pyproject.toml", "README.md", "LICENSE")
PACKAGES = ("server", "tools", ".package")


def version() -> str:
    found: str = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    return found


def stage(into: Path) -> None:
    """Copy what the bundle holds into `into`: sources only, no caches."""
    manifest = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))
    if manifest["version"] != version():
        raise SystemExit(f"bundle/manifest.json says version {manifest['version']}; pyproject.toml says {version()}.")
    shutil.copy(HERE / "manifest.json", into / "manifest.json")
    shutil.copy(HERE / "icon.png", into / "icon.png")
    for name in PROJECT_FILES:
        shutil.copy(ROOT / name, into / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, into / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="folder the .mcpb is written to")
    parser.add_argument("--mcpb", default=MCPB, help=f"the mcpb command (default: {MCPB})")
    args = parser.parse_args(argv)
    mcpb = shlex.split(args.mcpb)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out.resolve() / f"swarm-inference-mcp-{version()}.mcpb"
    with tempfile.TemporaryDirectory(prefix="mcpb-") as staging:
        stage(Path(staging))
        for step in (["validate", f"{staging}/manifest.json"], ["pack", staging, str(target)]):
            try:
                done = subprocess.run([*mcpb, *step], capture_output=True, text=True, check=False)  # noqa: S603 - our own command line
            except FileNotFoundError:
                raise SystemExit(
                    f"building the bundle runs {mcpb[0]}, which is not installed: install Node.js 18 or newer "
                    "(it brings npx), or pass --mcpb with another mcpb command."
                ) from None
            if done.returncode != 0:
                sys.stderr.write(done.stdout + done.stderr)
                raise SystemExit(f"mcpb {step[0]} refused the bundle (exit {done.returncode}).")
    sys.stderr.write(f"wrote {target}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
