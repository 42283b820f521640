"""``meridian``: the client on the command line (a thin layer over ``Client``).

Human output by default, ``--json`` for scripts. Exit codes a script can branch on:
see EXIT_CODES (and ``meridian --help``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Sequence

from meridian_client.client import Client, TaskRef
from meridian_client.errors import (APIError, MeridianError, ServerError, TaskCancelled, TaskFailed, TransportError,
                                    WaitTimeout, WorkflowCancelled, WorkflowFailed)

OK, FAILED, USAGE, TIMEOUT, CANCELLED, REFUSED, UNAVAILABLE = 0, 1, 2, 3, 4, 5, 6
EXIT_CODES = f"""exit codes:
  {OK}  succeeded / done
  {FAILED}  the task (or a workflow's step) failed
  {USAGE}  usage error (bad arguments, unreadable --payload)
  {TIMEOUT}  timed out waiting for the task(s)
  {CANCELLED}  the task (or workflow) was cancelled
  {REFUSED}  the API refused the request (4xx: bad key, not found, invalid, conflict)
  {UNAVAILABLE}  unavailable or unreachable (5xx after retries, network error)
"""


class Usage(Exception):
    """A usage error found after parsing (exit 2)."""


# --- output ------------------------------------------------------------------------------

def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _line(ref: str, task: dict[str, Any]) -> str:
    status = task.get("status", "?")
    text = (f"{ref}  {status}  {task.get('capability', '')}  "
            f"attempt {task.get('attempt', 0)}/{task.get('max_attempts', '?')}")
    if task.get("status_reason"):
        text += f"  ({task['status_reason']})"
    if status == "failed" and task.get("error"):
        text += f"\n  error: {task['error']}"
    return text


class Output:
    def __init__(self, as_json: bool) -> None:
        self.json = as_json

    def out(self, human: str, data: Any) -> None:
        print(_dump(data) if self.json else human)

    def err(self, text: str) -> None:
        print(text, file=sys.stderr)


def _progress(done: int, total: int, width: int = 10) -> str:
    filled = width * done // total if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} done"


# --- commands ------------------------------------------------------------------------------

def _payload(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    if text.startswith("@"):
        path = text[1:]
        try:
            with (sys.stdin if path == "-" else open(path, encoding="utf-8")) as f:
                text = f.read()
        except OSError as exc:
            raise Usage(f"--payload {text}: {exc.strerror or exc}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise Usage(f"--payload is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Usage("--payload must be a JSON object")
    return value


def _task_exit(task: dict[str, Any]) -> int:
    return {"succeeded": OK, "failed": FAILED, "cancelled": CANCELLED}.get(task.get("status", ""), OK)


def cmd_submit(client: Client, args: argparse.Namespace, out: Output) -> int:
    ref = client.submit(args.capability, _payload(args.payload), residency=args.residency, region=args.region,
                        priority=args.priority, timeout=args.task_timeout, max_attempts=args.max_attempts,
                        idempotency_key=args.idempotency_key, require_agent=args.require_agent, direct=args.direct,
                        callback_url=args.callback_url)
    if not args.wait:
        out.out(f"{ref}  {(ref.task or {}).get('status', 'submitted')}", {"ref": str(ref), "task": ref.task})
        return OK
    if not out.json:
        out.err(f"submitted {ref}, waiting…")
    return _show_outcome(ref, ref.wait(timeout=args.wait_timeout), out)


def _show_outcome(ref: TaskRef, task: dict[str, Any], out: Output) -> int:
    code = _task_exit(task)
    if out.json:
        out.out("", {"ref": str(ref), "task": task})
    elif code == OK:
        print(_dump(task.get("result")))
    else:
        out.err(_line(str(ref), task))
    return code


def cmd_status(client: Client, args: argparse.Namespace, out: Output) -> int:
    ref = client.task(args.id)
    task = ref.status()
    out.out(_line(str(ref), task) + (f"\n  result: {json.dumps(task.get('result'))}"
                                     if task.get("status") == "succeeded" else ""), task)
    return OK


def cmd_result(client: Client, args: argparse.Namespace, out: Output) -> int:
    ref = client.task(args.id)
    return _show_outcome(ref, ref.wait(timeout=args.timeout), out)


def cmd_wait(client: Client, args: argparse.Namespace, out: Output) -> int:
    refs = [client.task(text) for text in args.ids]
    bar = len(refs) > 1
    done = 0
    try:
        if bar:
            out.err(_progress(0, len(refs)))
        for ref in client.as_completed(refs, timeout=args.timeout):
            done += 1
            if not out.json:
                print(_line(str(ref), ref.task or {}), flush=True)
            if bar:
                out.err(_progress(done, len(refs)))
    except WaitTimeout as exc:
        if out.json:
            out.out("", {"tasks": [{"ref": str(r), "task": r.task} for r in refs],
                         "pending": [str(r) for r in exc.pending]})
        else:
            out.err(f"timed out: {len(exc.pending)} of {len(refs)} not finished: "
                    + " ".join(str(r) for r in exc.pending))
        return TIMEOUT
    if out.json:
        out.out("", {"tasks": [{"ref": str(r), "task": r.task} for r in refs], "pending": []})
    codes = {_task_exit(r.task or {}) for r in refs}
    return FAILED if FAILED in codes else CANCELLED if CANCELLED in codes else OK


def cmd_cancel(client: Client, args: argparse.Namespace, out: Output) -> int:
    ref = client.task(args.id)
    out.out(_line(str(ref), ref.cancel()), ref.task)
    return OK


def cmd_retry(client: Client, args: argparse.Namespace, out: Output) -> int:
    ref = client.task(args.id)
    out.out(_line(str(ref), ref.retry()), ref.task)
    return OK


def cmd_route(client: Client, args: argparse.Namespace, out: Output) -> int:
    answer = client.route(args.capability, residency=args.residency)
    rows = [f"{r['region_id']}  idle {r.get('idle')}/{r.get('count')}  {r.get('orchestrator_url')}  "
            f"labels {','.join(r.get('labels') or []) or '-'}" for r in answer.get("regions", [])]
    out.out("\n".join(rows) or "no region", answer)
    return OK


def _json_arg(text: str, what: str) -> Any:
    if text.startswith("@"):
        path = text[1:]
        try:
            with (sys.stdin if path == "-" else open(path, encoding="utf-8")) as f:
                text = f.read()
        except OSError as exc:
            raise Usage(f"{what} {text}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise Usage(f"{what} is not JSON: {exc}") from None


def _workflow_lines(workflow: dict[str, Any]) -> str:
    lines = [f"workflow {workflow.get('id')}  {workflow.get('status')}"
             + (f"\n  error: {workflow['error']}" if workflow.get("error") else "")]
    for step in workflow.get("steps") or []:
        tasks = step.get("tasks") or []
        names = ", ".join(f"{t.get('capability')} {t.get('status')}" for t in tasks)
        lines.append(f"  step {step.get('index')} ({step.get('kind')}, {step.get('status')}): {names}")
    return "\n".join(lines)


def _workflow_exit(workflow: dict[str, Any]) -> int:
    return {"succeeded": OK, "failed": FAILED, "cancelled": CANCELLED}.get(workflow.get("status", ""), OK)


def cmd_workflow_submit(client: Client, args: argparse.Namespace, out: Output) -> int:
    steps = _json_arg(args.steps, "--steps")
    if isinstance(steps, dict) and "steps" in steps:
        steps = steps["steps"]
    if not isinstance(steps, list):
        raise Usage('--steps must be a JSON list of steps (or {"steps": [...]})')
    workflow = client.workflow(steps, idempotency_key=args.idempotency_key)
    if args.wait:
        if not out.json:
            out.err(f"submitted workflow {workflow['id']}, waiting…")
        workflow = client.workflow_wait(workflow, timeout=args.wait_timeout)
    out.out(_workflow_lines(workflow), workflow)
    return _workflow_exit(workflow) if args.wait else OK


def cmd_workflow_status(client: Client, args: argparse.Namespace, out: Output) -> int:
    workflow = client.workflow_status(args.id)
    out.out(_workflow_lines(workflow), workflow)
    return OK


def cmd_workflow_result(client: Client, args: argparse.Namespace, out: Output) -> int:
    workflow = client.workflow_wait(args.id, timeout=args.timeout)
    if workflow.get("status") == "succeeded" and not out.json:
        print(_dump(workflow.get("result")))
    elif out.json:
        out.out("", workflow)
    else:
        out.err(_workflow_lines(workflow))
    return _workflow_exit(workflow)


def cmd_workflow_cancel(client: Client, args: argparse.Namespace, out: Output) -> int:
    workflow = client.workflow_cancel(args.id)
    out.out(_workflow_lines(workflow), workflow)
    return OK


def cmd_workflow_retry(client: Client, args: argparse.Namespace, out: Output) -> int:
    workflow = client.workflow_retry(args.id)
    out.out(_workflow_lines(workflow), workflow)
    return OK


# --- parser ------------------------------------------------------------------------------

def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The connection options, accepted before or after the command."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--url", default=default,
                        help="the router or a region (default: $MERIDIAN_URL)")
    parser.add_argument("--api-key", default=default, help="API key (default: $MERIDIAN_API_KEY)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="machine-readable output")
    parser.add_argument("--deadline", type=float, default=default,
                        help="seconds one request is retried for (429, 503, network) before giving up (120)")


def _command(subparsers, name: str, handler: Callable[..., int], help: str) -> argparse.ArgumentParser:
    """One subcommand: its help as description, the exit codes as epilog, the common options."""
    p = subparsers.add_parser(name, help=help, description=help, epilog=EXIT_CODES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p, suppress=True)
    p.set_defaults(handler=handler)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meridian", description="Submit tasks to a Meridian fleet and wait for their results.",
        epilog=EXIT_CODES + "\nA task is named <region_id>/<uuid> (as submit prints it).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "submit", cmd_submit, "submit a task; prints its reference (or, with --wait, its result)")
    p.add_argument("capability")
    p.add_argument("--payload", help="a JSON object, or @file.json (@- for stdin)")
    p.add_argument("--residency", help="only regions with this label (e.g. eu)")
    p.add_argument("--region", help="only this region")
    p.add_argument("--priority", type=int, help="0-9 (default 5)")
    p.add_argument("--timeout", dest="task_timeout", type=int, help="seconds per attempt")
    p.add_argument("--max-attempts", type=int)
    p.add_argument("--idempotency-key", help="default: a new one (a retried submit never runs twice)")
    p.add_argument("--require-agent", action="store_true", help="refuse at once if no agent serves it")
    p.add_argument("--callback-url", help="the region POSTs the final task there, signed (docs/api.md)")
    p.add_argument("--direct", action="store_true",
                   help="route at the router, submit to the region itself (the payload never crosses the router)")
    p.add_argument("--wait", action="store_true", help="wait for the result; exit code as `result`")
    p.add_argument("--wait-timeout", type=float, help="seconds to wait (default: no limit)")

    p = _command(sub, "status", cmd_status, "the task's current state")
    p.add_argument("id")
    p = _command(sub, "result", cmd_result, "wait for the task and print its result (exit 1 if it failed)")
    p.add_argument("id")
    p.add_argument("--timeout", type=float, help="seconds to wait (default: no limit)")
    p = _command(sub, "wait", cmd_wait, "wait for tasks to finish (a progress bar on stderr for several)")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--timeout", type=float, help="seconds to wait (default: no limit)")
    p = _command(sub, "cancel", cmd_cancel, "cancel a task")
    p.add_argument("id")
    p = _command(sub, "retry", cmd_retry, "run a failed or cancelled task again")
    p.add_argument("id")
    p = _command(sub, "route", cmd_route, "which regions can take a capability, best first")
    p.add_argument("capability")
    p.add_argument("--residency")

    p = sub.add_parser("workflow", help="chains and fan-outs with a join, at a region (submit, status, result, "
                                        "cancel, retry)", description="workflows, at a region's URL")
    _common(p, suppress=True)
    flows = p.add_subparsers(dest="workflow_command", required=True, metavar="WORKFLOW_COMMAND")

    q = _command(flows, "submit", cmd_workflow_submit, "submit a workflow; prints its state (or, with --wait, "
                                                                "its end)")
    q.add_argument("--steps", required=True,
                   help='the steps as JSON, or @file.json (@- for stdin): [{"capability": …, "payload": …}, '
                        '{"group": [{…}, …]}, …]')
    q.add_argument("--idempotency-key", help="default: a new one (a retried submit never makes two)")
    q.add_argument("--wait", action="store_true", help="wait until it ends; exit code as `workflow result`")
    q.add_argument("--wait-timeout", type=float, help="seconds to wait (default: no limit)")
    q = _command(flows, "status", cmd_workflow_status, "the workflow's state and every step's")
    q.add_argument("id")
    q = _command(flows, "result", cmd_workflow_result,
              "wait for the workflow and print its result (exit 1 if a step failed)")
    q.add_argument("id")
    q.add_argument("--timeout", type=float, help="seconds to wait (default: no limit)")
    q = _command(flows, "cancel", cmd_workflow_cancel, "cancel a workflow and its active tasks")
    q.add_argument("id")
    q = _command(flows, "retry", cmd_workflow_retry, "resume a failed or cancelled workflow")
    q.add_argument("id")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(args.json)
    url = args.url or os.environ.get("MERIDIAN_URL")
    key = args.api_key or os.environ.get("MERIDIAN_API_KEY")
    if not url or not key:
        parser.print_usage(sys.stderr)
        out.err("meridian: error: --url and --api-key (or MERIDIAN_URL and MERIDIAN_API_KEY) are required")
        return USAGE
    try:
        with Client(url, key, **({"deadline": args.deadline} if args.deadline else {})) as client:
            code: int = args.handler(client, args, out)
            return code
    except (Usage, ValueError) as exc:
        out.err(f"meridian: error: {exc}")
        return USAGE
    except TaskFailed as exc:
        out.err(f"failed: {exc.error} (after {exc.attempts} attempt(s))")
        return FAILED
    except TaskCancelled:
        out.err("cancelled")
        return CANCELLED
    except WorkflowFailed as exc:
        out.err(f"failed: {exc.workflow.get('error')}")
        return FAILED
    except WorkflowCancelled:
        out.err("cancelled")
        return CANCELLED
    except WaitTimeout as exc:
        out.err(f"timed out: {exc}")
        return TIMEOUT
    except ServerError as exc:
        _api_error(out, exc)
        return UNAVAILABLE
    except APIError as exc:
        _api_error(out, exc)
        return UNAVAILABLE if exc.status >= 500 else REFUSED
    except (TransportError, MeridianError) as exc:
        out.err(f"unavailable: {exc}")
        return UNAVAILABLE
    except KeyboardInterrupt:
        return 130


def _api_error(out: Output, exc: APIError) -> None:
    if out.json:
        print(_dump({"status": exc.status, **exc.body}), file=sys.stderr)
    else:
        fields = "".join(f"\n  {name}: {reasons}" for name, reasons in exc.fields.items())
        out.err(f"refused ({exc.status} {exc.code}): {exc.detail}{fields}")


if __name__ == "__main__":
    sys.exit(main())
