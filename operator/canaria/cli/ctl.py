"""The day-2 commands' shell: `canaria status|list|history|promote|abort|pause|resume|retry|rollback`
(also `kubectl canaria ...`): arguments, the session, printing, waiting, one-line errors.

The parts live beside it: `session` (kubeconfig, API calls, the resource read through the core's models),
`explain` (what happens next), `render` (tables and documents), `history` (the audit trail), `commands`
(preconditions, patch bodies, rollback targets). Expected failures are one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Any

import yaml
from rich.console import Console, Group, RenderableType
from rich.text import Text

from canaria.cli.commands import (
    check_command,
    command_patch,
    model_block_yaml,
    rollback_patch,
    rollback_target,
)
from canaria.cli.explain import fmt_clock
from canaria.cli.history import merge_history
from canaria.cli.render import list_rows, render_history, render_list, render_status, status_document
from canaria.cli.session import CtlError, Session
from canaria.core.api import Phase
from canaria.core.commands import new_command


def prog_name(argv0: str | None = None) -> str:
    """`kubectl canaria` when run as the kubectl plugin (`kubectl-canaria`), else `canaria`."""
    base = os.path.basename(argv0 if argv0 is not None else (sys.argv[0] if sys.argv else ""))
    if base.startswith("kubectl-"):
        return "kubectl " + base[len("kubectl-") :].replace("_", "-")
    return "canaria"


def _console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr); when piped, wide enough that lines do not wrap (like kubectl)."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(highlight=False, stderr=stderr)
    return Console(highlight=False, stderr=stderr, width=int(os.environ.get("COLUMNS") or 250))


def _dump(data: Any, output: str) -> None:
    if output == "json":
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def _local_tz() -> tzinfo:
    return datetime.now().astimezone().tzinfo or UTC


def _now() -> datetime:
    return datetime.now(UTC)


def _session(args: argparse.Namespace) -> Session:
    return Session.open(args.kubeconfig, args.context, args.namespace)


# ----------------------------------------------------------------------------------- subcommands


def cmd_status(args: argparse.Namespace) -> int:
    session = _session(args)
    prog = prog_name()
    if args.output:
        if args.watch:
            raise CtlError("--watch shows the table view only; drop -o")
        _dump(status_document(session.get(args.name), _now(), prog=prog), args.output)
        return 0
    console = _console()
    if not args.watch:
        console.print(render_status(session.get(args.name), _now(), prog=prog, tz=_local_tz()))
        return 0
    from rich.live import Live

    def view() -> RenderableType:
        stamp = Text(
            f"every {args.interval:g}s, Ctrl-C stops; at {fmt_clock(_now(), _local_tz())}", style="dim"
        )
        return Group(render_status(session.get(args.name), _now(), prog=prog, tz=_local_tz()), stamp)

    try:
        with Live(view(), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(args.interval)
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        return 0


def cmd_list(args: argparse.Namespace) -> int:
    session = _session(args)
    items = session.list(args.all_namespaces)
    if args.output:
        _dump(list_rows(items), args.output)
        return 0
    if not items:
        where = "any namespace" if args.all_namespaces else f"namespace {session.namespace}"
        print(f"no modeldeployments in {where}", file=sys.stderr)
        return 0
    _console().print(render_list(items, _now(), all_namespaces=args.all_namespaces))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    session = _session(args)
    md = session.get(args.name)
    try:
        events = session.events(args.name)
    except CtlError as exc:  # the audit trail in status is still worth showing
        print(f"warning: {exc}; showing status.history only", file=sys.stderr)
        events = []
    entries = merge_history(md.body, events)
    if args.output:
        _dump(entries, args.output)
        return 0
    if not entries:
        print(f"no history for {args.name} yet", file=sys.stderr)
        return 0
    _console().print(render_history(entries, tz=_local_tz()))
    return 0


def cmd_release_note(args: argparse.Namespace) -> int:
    from canaria.core.api import ModelDeployment
    from canaria.core.release_note import UnknownVersion, release_note, to_json, to_markdown

    resource = _session(args).get(args.name)
    if resource.spec is None:
        raise CtlError(f"{args.name}: {resource.spec_problem}")
    md = ModelDeployment(metadata=resource.metadata, spec=resource.spec, status=resource.status)
    try:
        note = release_note(md, args.version)
    except UnknownVersion as exc:
        raise CtlError(str(exc)) from exc
    if args.output == "json":
        _dump(to_json(note), "json")
    else:
        sys.stdout.write(to_markdown(note))
    return 0


def _wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise CtlError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def cmd_command(args: argparse.Namespace) -> int:
    session = _session(args)
    name, action = args.name, args.action
    md = session.get(name)
    full = bool(getattr(args, "full", False))
    check_command(action, md, full=full, force=args.force)
    user = args.user or session.default_user()
    command = new_command(action, user=user, reason=args.reason, full=full, now=_now())
    session.patch(name, command_patch(command.to_annotation()))
    what = f"{action}{' --full' if full else ''}"
    by = f" by {user}" + (f": {args.reason}" if args.reason else "")
    if not args.wait:
        print(f"{what} requested for {name} (command {command.id}){by}")
        return 0

    def handled() -> dict[str, Any] | None:
        current = session.get(name)
        last = current.status.last_command
        return current if last is not None and last.id == command.id else None

    current = _wait_for(
        f"the operator to handle command {command.id} (is it running?)", handled, args.timeout
    )
    result = current.status.last_command.result or "-"
    phase = current.status.phase.value if current.status.phase else "-"
    if str(result).startswith("ignored"):
        raise CtlError(f"the operator ignored {what} on {name}: {result} (phase {phase})")
    print(f"{name}: {what} (command {command.id}){by} → {result}; phase {phase}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    session = _session(args)
    name = args.name
    md = session.get(name)
    deployments = session.deployments(name)
    target = rollback_target(md, to=args.to, uri=args.uri, deployments=deployments)
    user = args.user or session.default_user()
    current = md.desired_version
    reason = args.reason or f"rollback {current} → {target.version} by {user}"
    err = _console(stderr=True)
    err.print(Text(target.note))
    if args.dry_run:
        print(f"dry run: would set spec.model.version of {name} {current} → {target.version}")
    else:
        session.patch(name, rollback_patch(target, reason), field_manager=_manager(user))
        print(
            f"{name}: spec.model.version {current} → {target.version} ({target.uri}); change reason: {reason}"
        )
    err.print(
        Text(
            "warning: if a GitOps tool (Argo CD, Flux) applies this ModelDeployment from a repository, it "
            "will undo this change at its next sync unless the repository changes too. Commit:",
            style="yellow",
        )
    )
    sys.stdout.write(model_block_yaml(md, target))
    if md.spec is not None and md.spec.model.evaluation:
        err.print(Text(f"note: spec.model.evaluation was left as is; it describes {current}", style="yellow"))
    if args.wait and not args.dry_run:

        def serving() -> bool:
            status = session.get(name).status
            return (
                status.stable is not None
                and status.stable.version == target.version
                and (status.phase == Phase.HEALTHY)
            )

        _wait_for(f"{target.version} to serve {name}", serving, args.timeout)
        print(f"{name}: {target.version} is serving (Healthy)")
    return 0


def _manager(user: str) -> str:
    """The field manager recorded for the spec change, i.e. the 'who' of the RolledBack transition."""
    printable = "".join(ch for ch in user if ch.isprintable()) or "canaria"
    return printable[:128]


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """One line on stderr and exit code 1 for every expected failure; never a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except CtlError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130

    return run


# ------------------------------------------------------------------------------------------ parser


def add_commands(commands: Any) -> None:
    """Register the day-2 subcommands on `canaria`'s subparsers."""
    prog = prog_name()
    target = argparse.ArgumentParser(add_help=False)
    group = target.add_argument_group("cluster")
    group.add_argument(
        "--kubeconfig", metavar="PATH", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    group.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")
    group.add_argument(
        "-n", "--namespace", metavar="NS", help="namespace (default: the context's namespace, else default)"
    )
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("-o", "--output", choices=("json", "yaml"), help="machine-readable output")
    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("--reason", help="why: recorded in the audit trail")
    who.add_argument("--user", help="who: recorded in the audit trail (default: $USER@<kubeconfig user>)")
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true", help="wait until the operator has carried it out")
    waiting.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="how long --wait waits (default 60)"
    )

    def add(
        name: str,
        help_: str,
        func: Callable[[argparse.Namespace], int],
        *parents: argparse.ArgumentParser,
        example: str,
        **kw: Any,
    ) -> argparse.ArgumentParser:
        parser = commands.add_parser(
            name,
            help=help_,
            description=help_[0].upper() + help_[1:] + ".",
            parents=[*parents, target],
            epilog=f"example: {prog} {example}",
            **kw,
        )
        parser.set_defaults(func=_guard(func), action=name)
        return parser

    status = add(
        "status",
        "show a ModelDeployment's rollout: versions, step, analysis, what happens next",
        cmd_status,
        output,
        example="status fraud --watch",
    )
    status.add_argument("name", metavar="NAME")
    status.add_argument("--watch", "-w", action="store_true", help="refresh until Ctrl-C")
    status.add_argument(
        "--interval", type=float, default=2.0, metavar="SECONDS", help="--watch refresh (default 2)"
    )

    listing = add("list", "list ModelDeployments, one line each", cmd_list, output, example="list -A")
    listing.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")

    history = add(
        "history",
        "the audit trail: every transition and analysis failure, who and why",
        cmd_history,
        output,
        example="history fraud -o yaml",
    )
    history.add_argument("name", metavar="NAME")

    note = add(
        "release-note",
        "the release note of a model version: lineage, metric deltas, live analysis, outcome, rollback",
        cmd_release_note,
        example="release-note fraud --version v12 > RELEASE.md",
    )
    note.add_argument("name", metavar="NAME")
    note.add_argument("--version", metavar="VERSION", help="the version (default: the one the spec names)")
    note.add_argument(
        "-o", "--output", choices=("markdown", "json"), default="markdown", help="format (default markdown)"
    )

    helps = {
        "promote": (
            "advance the canary one step now (--full: promote it to stable)",
            "promote fraud --reason 'dashboards green'",
        ),
        "abort": (
            "revert the rollout in progress to the last known good version",
            "abort fraud --reason 'p99 spike' --wait",
        ),
        "pause": (
            "hold the rollout where it is (analysis keeps running)",
            "pause fraud --reason 'investigating'",
        ),
        "resume": ("continue a rollout held by `pause`", "resume fraud"),
        "retry": (
            "roll out again the version that was reverted or refused",
            "retry fraud --reason 'feature store fixed'",
        ),
    }
    for action, (help_, example) in helps.items():
        parser = add(action, help_, cmd_command, who, waiting, example=example)
        parser.add_argument("name", metavar="NAME")
        parser.add_argument(
            "--force", action="store_true", help="replace a command the operator has not handled yet"
        )
        if action == "promote":
            parser.add_argument(
                "--full", action="store_true", help="skip the remaining steps: promote to stable"
            )

    rollback = add(
        "rollback",
        "change the spec back to the last known good version (or --to an earlier one)",
        cmd_rollback,
        who,
        waiting,
        example="rollback fraud --to v11 --reason 'v12 misroutes EU traffic'",
    )
    rollback.add_argument("name", metavar="NAME")
    rollback.add_argument(
        "--to", metavar="VERSION", help="a version from the history (default: last known good)"
    )
    rollback.add_argument("--uri", help="model URI of that version, when Canaria has not recorded it")
    rollback.add_argument("--dry-run", action="store_true", help="print the change, do not make it")
