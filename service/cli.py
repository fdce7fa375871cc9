"""``ragwatch``: serve the API, mint a token, ingest files and ask questions from the shell."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ragwatch_client import AnswerDelta, Client, Passage, RagwatchError, supported_files

from service.auth import ADMIN, MEMBER, mint_token
from service.config import Settings, SettingsError, load_settings

__all__ = ["main"]

_TTL = re.compile(r"^(\d+)([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    match = _TTL.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 15m, 1h or 7d, not {text!r}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragwatch", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API server")
    serve.add_argument("--host", help="interface to bind (default: RAGWATCH_HOST)")
    serve.add_argument("--port", type=int, help="TCP port (default: RAGWATCH_PORT)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (only 1 while serving /metrics)")

    token = commands.add_parser("token", help="print a token signed with RAGWATCH_JWT_SECRET")
    token.add_argument("--tenant", required=True)
    token.add_argument("--user", required=True)
    token.add_argument("--role", action="append", choices=[ADMIN, MEMBER], help="repeatable (default: member)")
    token.add_argument("--ttl", type=parse_ttl, default=3600, help="lifetime: 90s, 15m, 1h, 7d (default 1h)")

    for name, helptext in (
        ("ingest", "ingest PDF, DOCX, HTML, Markdown and text files or folders"),
        ("ask", "ask a question"),
        ("reindex", "embed a knowledge base again with the server's embedder (after switching embedders)"),
    ):
        sub = commands.add_parser(name, help=helptext)
        sub.add_argument("--kb", required=True, help="knowledge base id")
        sub.add_argument("--url", default=os.environ.get("RAGWATCH_URL", "http://127.0.0.1:8000"))
        sub.add_argument("--token", default=os.environ.get("RAGWATCH_TOKEN"), help="bearer token (RAGWATCH_TOKEN)")
        sub.add_argument("--tenant", default="demo", help="tenant of the token minted when none is given")
    commands.choices["ingest"].add_argument("paths", nargs="+", type=Path)
    commands.choices["ingest"].add_argument(
        "--concurrency", type=int, default=4, choices=range(1, 33), metavar="N", help="uploads at a time (default 4)"
    )
    commands.choices["ask"].add_argument("question")
    commands.choices["ask"].add_argument("--stream", action="store_true")
    commands.choices["ask"].add_argument("--top-k", type=int)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in CLIENT_COMMANDS and args.token:
        # A client given --token may talk to a remote server: it needs none of the server's settings.
        return _run_client(None, args)
    try:
        settings = load_settings(os.environ)
    except SettingsError as exc:
        print(f"ragwatch: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(settings, args)
    if args.command == "token":
        return _token(settings, args)
    return _run_client(settings, args)


def _run_client(settings: Settings | None, args: argparse.Namespace) -> int:
    try:
        client = _client(settings, args)
    except ValueError as exc:  # an invalid --tenant for the token minted on the caller's behalf
        print(f"ragwatch: {exc}", file=sys.stderr)
        return 2
    try:
        with client:
            return CLIENT_COMMANDS[args.command](client, args)
    except (RagwatchError, UsageError) as exc:  # a problem the server answered, or none (cannot reach it)
        print(f"ragwatch: {exc}", file=sys.stderr)
        return 1


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    if args.workers != 1 and settings.telemetry.metrics_enabled:
        print(
            "ragwatch: --workers: one worker per process while it serves /metrics (its Prometheus registry is "
            "per process); scale with replicas, or set RAGWATCH_METRICS_ENABLED=false",
            file=sys.stderr,
        )
        return 2
    from service.server import serve

    try:
        serve(settings, args.host or settings.server.host, args.port or settings.server.port, args.workers)
    except SettingsError as exc:  # a settings file (prices, rate-limit overrides) that cannot be used
        print(f"ragwatch: {exc}", file=sys.stderr)
        return 2
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    secret = settings.auth.secret
    if secret is None:
        print("ragwatch: RAGWATCH_JWT_SECRET: required to mint tokens", file=sys.stderr)
        return 2
    if settings.auth.mode == "jwt" and "HS256" not in settings.auth.algorithms:
        print(
            "ragwatch: RAGWATCH_JWT_ALGORITHMS: the server does not accept HS256, the algorithm of minted tokens",
            file=sys.stderr,
        )
        return 2
    try:
        token = mint_token(
            secret.reveal(),
            tenant_id=args.tenant,
            user_id=args.user,
            roles=args.role or [MEMBER],
            ttl_s=args.ttl,
            iss=settings.auth.issuer,
            aud=settings.auth.audience,
        )
    except ValueError as exc:
        print(f"ragwatch: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


class UsageError(Exception):
    """The command line names something that is not there."""


def _client(settings: Settings | None, args: argparse.Namespace) -> Client:
    headers: dict[str, str] = {}
    token = args.token or ""
    if token or settings is None:
        pass
    elif settings.auth.mode == "dev":
        headers.update({"X-Tenant-Id": args.tenant, "X-User-Id": "cli"})
    elif settings.auth.secret is not None:
        token = mint_token(
            settings.auth.secret.reveal(),
            args.tenant,
            "cli",
            [ADMIN, MEMBER],
            600,
            iss=settings.auth.issuer,
            aud=settings.auth.audience,
        )
    return Client(args.url, token=token, headers=headers, timeout=120)


def iter_files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from supported_files(path)
        elif path.is_file():
            yield path
        else:
            raise UsageError(f"no such file or folder: {path}")


def _ingest(client: Client, args: argparse.Namespace) -> int:
    """Upload every file, ``--concurrency`` at a time (the server commits concurrent uploads together); a file
    the server refuses is reported and the rest go on."""
    from rich.progress import Progress

    files = list(iter_files(args.paths))
    total_chunks = 0
    failures: list[str] = []
    with Progress(transient=False) as progress:
        task = progress.add_task("ingesting", total=len(files))
        for result in client.documents.upload_files(args.kb, files, concurrency=args.concurrency):
            if result.document is not None:
                total_chunks += result.document.chunks
            else:
                failures.append(f"{result.path}: {result.error}")
            progress.update(task, advance=1, description=result.path.name)
    for failure in failures:
        print(f"ragwatch: {failure}", file=sys.stderr)
    print(f"ingested {len(files) - len(failures)} file(s), {total_chunks} chunk(s) into {args.kb}")
    return 1 if failures else 0


def _ask(client: Client, args: argparse.Namespace) -> int:
    if not args.stream:
        reply = client.chat(args.kb, args.question, top_k=args.top_k)
        print(reply.answer)
        _print_citations(reply.citations, reply.trace_id)
        return 0
    for event in client.chat_stream(args.kb, args.question, top_k=args.top_k):
        if isinstance(event, AnswerDelta):
            print(event.text, end="", flush=True)
        else:
            print()
            _print_citations(event.citations, event.trace_id)
    return 0


def _reindex(client: Client, args: argparse.Namespace) -> int:
    done = client.knowledge_bases.reindex(args.kb)
    if done.chunks:
        print(f"{done.chunks} chunks embedded again: {done.previous_embedding_model} -> {done.embedding_model}")
    else:
        print(f"already embedded with {done.embedding_model}: nothing to do")
    return 0


CLIENT_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "ingest": _ingest,
    "ask": _ask,
    "reindex": _reindex,
}


def _print_citations(citations: Sequence[Passage], trace_id: str) -> None:
    for number, citation in enumerate(citations, start=1):
        print(f"  [{number}] {citation.title} ({citation.document_id}, score {citation.score:.2f})")
    print(f"  trace {trace_id}")
