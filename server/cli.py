"""Command line: flags over the environment, then serve MCP on the chosen transport.

Under stdio, stdout is the protocol wire: only `--help`, `--version` and `check` print to it,
and they never start the server. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
from pydantic import ValidationError

from swarm_inference_mcp.server import __version__
from swarm_inference_mcp.server.config import Settings
from swarm_inference_mcp.server.environment import BY_ENV, VARIABLES, load_settings
from swarm_inference_mcp.tools import PROVIDERS

log = logging.getLogger("swarm_inference_mcp")

QUIET_LOGGERS = ("httpx2", "httpcore2", "httpcore", "httpx")
"""HTTP libraries whose own DEBUG lines show response headers: they log warnings and errors only."""
COMMAND_FLAGS = frozenset({"command", "days", "json", "by_client", "html", "name", "help_settings"})
"""Flags of the commands, not settings."""


def _flag_type(annotation: Any) -> Any:
    if annotation is bool:
        return None
    if annotation in (int, float):
        return annotation
    return str


SHOWN = {
    "transport": "stdio (default), or streamable-http for a shared server [SWARM_MCP_TRANSPORT]",
    "port": "port of the HTTP transport [SWARM_MCP_PORT; 8000]",
    "wait": "seconds a call waits before it hands back a job handle [SWARM_MCP_WAIT; 45]",
    "log_level": "DEBUG, INFO, WARNING or ERROR, on stderr [SWARM_MCP_LOG_LEVEL; INFO]",
}
"""The settings whose flags `--help` shows, in a few words; `--help-settings` shows every one in full."""
DOCS = "https://github.com/swarm-inference-mcp/swarm-inference-mcp/tree/main/docs"


def build_parser(*, every_setting: bool = False) -> argparse.ArgumentParser:
    """The command line. `--help` fits a screen; `--help-settings` (`every_setting`) lists every setting."""
    parser = argparse.ArgumentParser(
        prog="swarm-inference-mcp",
        description="MCP server that asks the Fortytwo and Swarms inference APIs for a second opinion. Serves MCP "
        "over stdio by default: a host (Claude Desktop, Claude Code, VS Code, Cursor) starts it. The API keys "
        "come from the environment only: FORTYTWO_API_KEY and SWARMS_API_KEY.",
        epilog=f"Every setting is an environment variable and a flag: --help-settings lists them all. Docs: {DOCS}",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--help-settings", action="store_true", help="list every setting with its variable and exit")
    parser.add_argument(
        "command",
        nargs="?",
        choices=["serve", "check", "usage", "token"],
        default="serve",
        help="serve (default): serve MCP over stdio; check: test the configuration and each provider; "
        "usage: spend per day from the usage state file; token NAME: a new token for an HTTP client",
    )
    parser.add_argument("name", nargs="?", help="token: the client's name")
    parser.add_argument("--days", type=int, default=14, help="usage: how many days back [14]")
    parser.add_argument("--json", action="store_true", help="usage: JSON instead of a table")
    parser.add_argument("--by-client", action="store_true", help="usage: per HTTP client")
    parser.add_argument("--html", metavar="FILE", help="usage: a page with charts")
    for variable in VARIABLES:
        if variable.flag is None:
            continue
        name, annotation = variable.name, variable.field.annotation
        help_text = f"{variable.description} [env {variable.env}; default {variable.default}]"
        if not every_setting:
            help_text = SHOWN.get(name, argparse.SUPPRESS)
        if annotation is bool:
            parser.add_argument(
                variable.flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(variable.flag, dest=name, type=_flag_type(annotation), default=None, help=help_text)
    return parser


def _before_parsing(parser: argparse.ArgumentParser, given: list[str]) -> int | None:
    """`--help-settings`, or an unknown flag refused naming the closest: the exit status; else None."""
    if "--help-settings" in given:
        build_parser(every_setting=True).print_help()
        return 0
    unknown = _unknown_flag(parser, given)
    if unknown is None:
        return None
    parser.print_usage(sys.stderr)
    sys.stderr.write(f"swarm-inference-mcp: {unknown}\n")
    return 2


def _unknown_flag(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str | None:
    """The sentence for the first flag that is none of ours, naming the closest one; None if all are known."""
    known = [option for action in parser._actions for option in action.option_strings]
    for argument in argv:
        if argument == "--":
            break
        flag = argument.split("=", 1)[0]
        if flag.startswith("--") and flag not in known:
            closest = difflib.get_close_matches(flag, known, n=1)
            hint = f" (did you mean {closest[0]}?)" if closest else ""
            return f"unknown flag {flag[:64]}{hint}; --help lists the common ones, --help-settings every setting"
    return None


def _unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One sentence per variable that looks like a setting of ours but is none, naming the closest one."""
    known = list(BY_ENV)
    prefixes = ("SWARM_MCP_", *(f"{spec.name.upper()}_" for spec in PROVIDERS))
    sentences = []
    for name in sorted(environ):
        if name.startswith(prefixes) and name not in known:
            closest = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {closest[0]}?" if closest else ""
            sentences.append(f"{name} is not a setting, so it does nothing{hint}")
    return sentences


def configure_logging(level: str) -> None:
    """Everything we and the SDK log goes to stderr; the SDK's own set-up then finds a handler and adds none."""
    logging.basicConfig(
        stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    for library in QUIET_LOGGERS:
        logging.getLogger(library).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    given = list(sys.argv[1:] if argv is None else argv)
    done = _before_parsing(parser, given)
    if done is not None:
        return done
    args = parser.parse_args(given)
    try:
        settings = load_settings(os.environ, {k: v for k, v in vars(args).items() if k not in COMMAND_FLAGS})
    except (ValidationError, OSError) as exc:
        sys.stderr.write(f"swarm-inference-mcp: invalid configuration: {_config_problem(exc)}\n")
        return 2
    configure_logging(settings.log_level)
    for sentence in _unknown_variables(os.environ):
        log.warning("%s", sentence)
    if args.command in ("serve", "check"):
        _warn_about_readable_secrets(settings)
    if args.command == "check":
        from swarm_inference_mcp.server.check import run_check  # noqa: PLC0415 - see below

        return anyio.run(run_check, settings, sys.stdout)
    if args.command == "usage":
        return _usage(args, settings)
    if args.command == "token":
        return _new_token(args.name)
    return _serve(settings)


def _serve(settings: Settings) -> int:
    """Serve MCP on the chosen transport until the client goes (stdio) or a signal (HTTP)."""
    # The SDK import is the bulk of start-up: --help, --version and config errors do without it.
    from swarm_inference_mcp.server.app import create_server  # noqa: PLC0415
    from swarm_inference_mcp.server.telemetry import traced  # noqa: PLC0415 - imports OpenTelemetry's SDK only if asked

    if settings.redis_url is not None:
        from swarm_inference_mcp.server.scaleout.link import redis_problem  # noqa: PLC0415 - only with Redis

        problem = anyio.run(redis_problem, settings.redis_url.get_secret_value(), settings.redis_password_file)
        if problem is not None:
            sys.stderr.write(f"swarm-inference-mcp: not starting: {problem}.\n")
            return 2
    for spec_name, endpoint in settings.endpoints().items():
        if endpoint.settings.api_key is None:
            log.warning("%s has no API key: set %s to use it", spec_name, endpoint.spec.key_env)
    if settings.transport == "streamable-http":
        from swarm_inference_mcp.server.drain import InFlight  # noqa: PLC0415
        from swarm_inference_mcp.server.gateway.gate import ConfigurationRefused  # noqa: PLC0415 - only over HTTP
        from swarm_inference_mcp.server.gateway.metrics import PrometheusMetrics  # noqa: PLC0415 - only over HTTP
        from swarm_inference_mcp.server.gateway.serve import serve_http  # noqa: PLC0415 - only this transport needs uvicorn

        calls = InFlight()  # what a shutdown drains
        metrics = PrometheusMetrics(redis=settings.redis_url is not None)
        try:
            with traced(os.environ):
                anyio.run(serve_http, settings, create_server(settings, calls, metrics), calls, metrics)
        except ConfigurationRefused as refused:
            sys.stderr.write(f"swarm-inference-mcp: {refused}\n")
            return 2
        return 0
    if sys.stdin.isatty():
        sys.stderr.write(
            "swarm-inference-mcp: serving MCP over stdio, waiting for an MCP client on stdin (a host starts this "
            "command itself; Ctrl-C stops). To try a call: npx @modelcontextprotocol/inspector --cli --method "
            "tools/call --tool-name ask_swarm --tool-arg prompt=hello -- swarm-inference-mcp\n"
        )
    with contextlib.suppress(KeyboardInterrupt), traced(os.environ):
        create_server(settings).run("stdio")
    return 0


def _warn_about_readable_secrets(settings: Settings) -> None:
    """One WARNING each for a tokens file of plain tokens and a Redis password file that others can read."""
    from swarm_inference_mcp.server.clients import TokensFileError, load_clients, warn_if_readable  # noqa: PLC0415 - only with them

    if settings.tokens_file is not None:
        try:
            plain = any(admitted.plain for admitted in load_clients(settings.tokens_file, None))
        except TokensFileError:
            plain = False  # the server refuses to start with it, in its own sentence
        if plain:
            warn_if_readable(Path(settings.tokens_file), "holds plain tokens")
    if settings.redis_password_file is not None:
        warn_if_readable(Path(settings.redis_password_file).expanduser(), "holds the Redis password")


def _new_token(name: str | None) -> int:
    from swarm_inference_mcp.server.clients import TokensFileError, new_token  # noqa: PLC0415 - only this command needs it

    if not name:
        sys.stderr.write("swarm-inference-mcp token: give the client's name: swarm-inference-mcp token NAME\n")
        return 2
    try:
        token, line = new_token(name)
    except TokensFileError as err:
        sys.stderr.write(f"swarm-inference-mcp token: {err}\n")
        return 2
    sys.stdout.write(
        f"Token for {name} (give it to them; it is not stored anywhere and is shown only this once):\n{token}\n\n"
        f"Add this line to the tokens file (SWARM_MCP_TOKENS_FILE), then send the server SIGHUP:\n{line}\n"
    )
    return 0


def _config_problem(exc: ValidationError | OSError) -> str:
    if isinstance(exc, OSError):
        return f"cannot read a file it names ({exc.strerror})"
    problems = []
    for error in exc.errors():
        where = _variable_at(error["loc"])
        problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def _variable_at(loc: tuple[int | str, ...]) -> str:
    """The environment variable of a validation error's location (a field's name or alias, or a
    provider's and its field's)."""
    path = tuple(str(step) for step in loc)
    for variable in VARIABLES:
        if path[: len(variable.path)] == variable.path or path[:1] == (variable.env,):
            return variable.env
    return path[0] if path else "settings"


def _usage(args: argparse.Namespace, settings: Settings) -> int:
    """The `usage` command: a table, JSON, or the page (`--html`), from the state file or Redis."""
    days = max(1, args.days)
    if args.html is not None:
        from swarm_inference_mcp.server.accounting.report import write_usage_page  # noqa: PLC0415 - only this command

        return write_usage_page(settings, days, Path(args.html), sys.stdout)
    from swarm_inference_mcp.server.accounting.report import print_usage  # noqa: PLC0415 - only this command draws tables

    return print_usage(settings, days, args.json, sys.stdout, by_client=args.by_client)
