"""`mutual-aid-bot init | run | console | check-config | backup | migrate | demo | signal link`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from bot import __version__
from bot.config import BotConfig, ConfigError, load_config, load_for_run
from bot.logs import configure_logging
from bot.setup_wizard import add_arguments as add_init_arguments
from bot.storage import StorageError, backup_database


def _print_problems(error: ConfigError, path: str) -> None:
    print(f"{path}: configuration problems:", file=sys.stderr)
    for where, what, hint in error.problems:
        print(f"  {where}: {what}" + (f"\n    fix: {hint}" if hint else ""), file=sys.stderr)


def _load(path: str) -> BotConfig | None:
    """The configuration at `path`, or None after printing its problems."""
    try:
        return load_config(path)
    except ConfigError as exc:
        _print_problems(exc, path)
        return None


def _load_for_run(path: str) -> BotConfig | None:
    try:
        config = load_for_run(path)
    except ConfigError as exc:
        _print_problems(exc, path)
        return None
    return config


def cmd_check_config(args: argparse.Namespace) -> int:
    if _load_for_run(args.path) is None:
        return 1
    print(f"{args.path}: OK")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = _load_for_run(args.config)
    if config is None:
        return 1
    secret_filter = configure_logging(args.log_level or config.bot.log_level)
    from bot.runtime import serve_networks

    try:
        return asyncio.run(serve_networks(config, secret_filter))
    except StorageError as exc:
        logging.getLogger("bot").error("cannot use the database: %s", exc)
        return 2


def cmd_console(args: argparse.Namespace) -> int:
    from bot.transport.console import run_console

    if args.config:
        config = _load(args.config)
        if config is None:
            return 1
    else:
        config = BotConfig()
        config.storage.database = Path(args.database)
    configure_logging(args.log_level or "WARNING")
    try:
        return asyncio.run(run_console(config))
    except StorageError as exc:
        print(f"cannot use the database: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy the live database while the bot runs (SQLite's online backup API)."""
    if args.config:
        config = _load(args.config)
        if config is None:
            return 1
        source = config.storage.database
    else:
        source = Path(args.database)
    try:
        backup_database(source, Path(args.target))
    except StorageError as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return 2
    print(f"backed up {source} to {args.target} (integrity checked, mode 0600)")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from bot.upgrade import run_migrate

    config = _load(args.config)
    if config is None:
        return 1
    configure_logging(args.log_level or "WARNING")
    return run_migrate(config.storage.database, dry_run=args.dry_run, sql=args.sql)


def cmd_init(args: argparse.Namespace) -> int:
    from bot.setup_wizard import run_init

    return run_init(args)


def cmd_signal_link(args: argparse.Namespace) -> int:
    from bot.transport.signal_link import link_device
    from bot.transport.signal_rpc import ConnectionLost, RpcError

    config = _load(args.config)
    if config is None:
        return 1
    if config.signal is None:
        print(f"{args.config}: add a [signal] section (see config.example.toml)", file=sys.stderr)
        return 1
    configure_logging(args.log_level or "WARNING")
    try:
        aci = asyncio.run(link_device(config.signal, print))
    except (ConnectionLost, RpcError, TimeoutError, OSError) as exc:
        print(f"linking failed: {exc or type(exc).__name__}. Is `signal-cli daemon` running "
              f"without -a at {config.signal.daemon}, and can it reach the Signal servers?",
              file=sys.stderr)
        return 2
    print("Linked." + (f" Set signal.account = \"{aci}\" in {args.config}." if aci else
                       " Set signal.account to the account's id or number in the config."))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from bot.demo import run_demo
    except ModuleNotFoundError:  # the installed package leaves the development server out
        print("The demo runs from a copy of the source: git clone it, then `make demo` there.",
              file=sys.stderr)
        return 1

    secret_filter = configure_logging(args.log_level or "INFO")
    return run_demo(Path(args.dir), secret_filter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mutual-aid-bot", description=__doc__)
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="set the bot up for your homeserver: account, config, secrets")
    add_init_arguments(init)
    init.set_defaults(func=cmd_init)
    run = sub.add_parser("run", help="connect to Matrix and serve the configured account")
    run.add_argument("--config", required=True, help="path to the TOML configuration")
    run.set_defaults(func=cmd_run)
    console = sub.add_parser("console", help="chat with the bot in this terminal, no homeserver")
    console.add_argument("--config", help="use this configuration's storage and settings")
    console.add_argument("--database", default="console.db",
                         help="database file when no --config is given (default: console.db)")
    console.set_defaults(func=cmd_console)
    check = sub.add_parser("check-config", help="validate a configuration and its secrets")
    check.add_argument("path")
    check.set_defaults(func=cmd_check_config)
    signal_cmd = sub.add_parser("signal", help="Signal set-up")
    signal_sub = signal_cmd.add_subparsers(dest="signal_command", required=True)
    link = signal_sub.add_parser("link", help="link the bot as a device of a Signal account (QR)")
    link.add_argument("--config", required=True, help="path to the TOML configuration")
    link.set_defaults(func=cmd_signal_link)
    backup = sub.add_parser("backup", help="copy the database safely while the bot runs")
    backup.add_argument("target", help="the new backup file (must not exist yet)")
    where = backup.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="back up the database this configuration uses")
    where.add_argument("--database", help="back up this database file")
    backup.set_defaults(func=cmd_backup)
    migrate = sub.add_parser("migrate", help="upgrade the database to this release (after a backup)")
    migrate.add_argument("--config", required=True, help="path to the TOML configuration")
    migrate.add_argument("--dry-run", action="store_true",
                         help="say what would change and try it on a copy; change nothing")
    migrate.add_argument("--sql", action="store_true", help="show each step's SQL statements")
    migrate.set_defaults(func=cmd_migrate)
    demo = sub.add_parser("demo", help="local Synapse + bot + alice and bob in an encrypted room")
    demo.add_argument("--dir", default=".demo", help="where the demo keeps its state")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
