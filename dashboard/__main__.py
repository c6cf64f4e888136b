"""The dashboard's operator CLI: python -m dashboard {token,run}.

  token  print a portal token (the consumer view's link credential) for one consumer:
         python -m dashboard token --consumer acme --ttl-hours 24
  run    start the dashboard: streamlit run dashboard/app.py, with the Pinot broker URL set:
         python -m dashboard run [--broker URL] [--port 8501] [--operator]

The token secret comes from DASHBOARD_TOKEN_SECRET (placeholders refused unless DASHBOARD_DEMO=1);
it is never printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dashboard import data, tokens
from dashboard.present import OPERATOR_ENV

APP = Path(__file__).resolve().parent / "app.py"
REPO_ROOT = APP.parent.parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dashboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    token = sub.add_parser("token", help="print a portal token for one consumer")
    token.add_argument("--consumer", required=True, help="the consumer the token shows")
    token.add_argument(
        "--ttl-hours",
        type=float,
        default=tokens.DEFAULT_TTL_S / 3600,
        help=f"hours until it expires (default 24, at most {tokens.MAX_TTL_S // 3600})",
    )
    token.add_argument(
        "--base-url",
        help="also print the portal link: this dashboard URL with ?token=… appended",
    )
    run = sub.add_parser("run", help="start the dashboard (streamlit run dashboard/app.py)")
    run.add_argument(
        "--broker",
        default=data.broker_url(),
        help=f"Pinot broker URL [env {data.BROKER_ENV}] (default: {data.DEFAULT_BROKER})",
    )
    run.add_argument("--address", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8501, help="listen port (default 8501)")
    run.add_argument(
        "--operator",
        action="store_true",
        help="serve the ops and product views to visitors without a token (operators only)",
    )
    return parser


def cmd_token(args: argparse.Namespace) -> int:
    try:
        secret = tokens.read_secret()
        token = tokens.create_token(
            args.consumer, secret, int(time.time()), ttl_s=round(args.ttl_hours * 3600)
        )
    except (tokens.SecretError, tokens.TokenError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(token)
    if args.base_url:
        print(f"{args.base_url.rstrip('/')}/?token={token}")
    return 0


def run_command(args: argparse.Namespace) -> list[str]:
    """The streamlit command line for ``run``."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        args.address,
        "--server.port",
        str(args.port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # Readers of the page get no developer menu (rerun, deploy, settings).
        "--client.toolbarMode",
        "viewer",
        # A bug shows a generic message in the page; its traceback goes to the server's log.
        "--client.showErrorDetails",
        "none",
    ]


def cmd_run(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    env[data.BROKER_ENV] = args.broker
    if args.operator:
        env[OPERATOR_ENV] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    try:
        tokens.read_secret(env)
    except tokens.SecretError as e:
        print(f"warning: portal links will be refused: {e}", file=sys.stderr)
    try:
        return subprocess.call(run_command(args), env=env, cwd=REPO_ROOT)
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cmd_token(args) if args.command == "token" else cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
