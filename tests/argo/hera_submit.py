#!/usr/bin/env python3
"""Submit a diamond DAG to an Argo-compatible server with hera's own client.

    hera_submit.py --host http://127.0.0.1:PORT --token TOKEN --namespace NS
        builds the workflow `hera-diamond-` (generateName), creates it with
        hera's Workflow.create() (POST /api/v1/workflows/NS), then polls
        WorkflowsService.get_workflow (GET /api/v1/workflows/NS/NAME) until
        status.phase is Succeeded, Failed or Error, and prints the final
        workflow (as hera parsed it) as JSON on stdout.
    --lint   POST /api/v1/workflows/NS/lint instead; prints the answer.
    --list   GET /api/v1/workflows/NS; prints the workflow names, one a line.
    --print  only prints the workflow hera would send (no request).

The workflow: A, B, C, D with B and C depending on A and D on B and C.
A runs the script template `produce` (sh, alpine) that writes its output
parameter `message`; B, C and D run the container template `echo`
(command [echo], args ["{{inputs.parameters.message}}"], input parameter
`message`); B and C are passed A's output, D a constant.
--no-output drops the output parameter (A then also runs `echo`).

Exit status: 0 when the workflow Succeeded (or --lint/--list/--print
worked), 2 when it ended Failed/Error or did not end within --timeout,
1 when a request failed (the server's answer is printed on stderr).

hera sends `Authorization: Bearer <token>`: it adds "Bearer " itself to a
token that is a single word, and leaves a token that already has a scheme
("Bearer xyz") as it is, so either form gives the header exactly once.
hera never reads a kube config; TLS verification is off unless --verify-tls,
and the requests session ignores proxy variables and ~/.netrc (which could
otherwise replace the Authorization header).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import pydantic
import requests
from hera.exceptions import HeraException
from hera.workflows import DAG, Container, Parameter, Script, Workflow, WorkflowsService
from hera.workflows.models import ValueFrom

TERMINAL = ("Succeeded", "Failed", "Error")
IMAGE = "alpine:3.20"


def build(namespace: str, service: WorkflowsService, with_output: bool = True) -> Workflow:
    with Workflow(
        generate_name="hera-diamond-",
        namespace=namespace,
        entrypoint="diamond",
        workflows_service=service,
        labels={"s3m.test/client": "hera"},
    ) as w:
        echo = Container(
            name="echo",
            image=IMAGE,
            command=["echo"],
            args=["{{inputs.parameters.message}}"],
            inputs=[Parameter(name="message")],
        )
        if with_output:
            produce = Script(
                name="produce",
                image=IMAGE,
                command=["sh"],
                source="echo -n hello-from-A > /tmp/message; cat /tmp/message",
                outputs=[Parameter(name="message", value_from=ValueFrom(path="/tmp/message"))],
            )
            from_a = "{{tasks.A.outputs.parameters.message}}"
        else:
            from_a = "A done"
        with DAG(name="diamond"):
            if with_output:
                a = produce(name="A")
            else:
                a = echo(name="A", arguments={"message": "A"})
            b = echo(name="B", arguments={"message": f"B got {from_a}"})
            c = echo(name="C", arguments={"message": f"C got {from_a}"})
            d = echo(name="D", arguments={"message": "D"})
            a >> [b, c] >> d
    return w


def dump(model) -> str:
    return json.dumps(model.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", required=True, help="e.g. http://127.0.0.1:3000")
    ap.add_argument("--token", required=True, help="bearer token (with or without the 'Bearer ' prefix)")
    ap.add_argument("--namespace", required=True, help="the S3M project, e.g. stf040")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the end (default 120)")
    ap.add_argument("--poll-interval", type=float, default=1.0, help="seconds between polls (default 1)")
    ap.add_argument("--verify-tls", action="store_true", help="verify the server's TLS certificate")
    ap.add_argument("--no-output", action="store_true", help="no output parameter (A echoes too)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--lint", action="store_true", help="lint the workflow instead of creating it")
    mode.add_argument("--list", action="store_true", help="list the workflows of the namespace")
    mode.add_argument("--print", action="store_true", help="print the workflow only, send nothing")
    args = ap.parse_args()

    session = requests.Session()
    session.trust_env = False  # no proxies from the environment, no ~/.netrc auth
    if not args.verify_tls:
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    service = WorkflowsService(
        host=args.host.rstrip("/") + "/",  # hera urljoin()s its paths onto the host
        token=args.token,
        verify_ssl=args.verify_tls,
        namespace=args.namespace,
        session=session,
    )

    try:
        if args.list:
            listing = service.list_workflows(namespace=args.namespace)
            for wf in listing.items or []:
                print(wf.metadata.name)
            return 0

        w = build(args.namespace, service, with_output=not args.no_output)
        if args.print:
            print(json.dumps(w.to_dict(), indent=2))
            return 0
        if args.lint:
            print(dump(w.lint()))
            return 0

        created = w.create()
        name = created.metadata.name
        print(f"created {args.namespace}/{name}", file=sys.stderr)
        deadline = time.monotonic() + args.timeout
        wf = created
        while True:
            phase = wf.status.phase if wf.status else None
            if phase in TERMINAL:
                break
            if time.monotonic() >= deadline:
                print(f"timed out after {args.timeout:g} s; last phase: {phase}", file=sys.stderr)
                print(dump(wf))
                return 2
            time.sleep(args.poll_interval)
            wf = service.get_workflow(name, namespace=args.namespace)
        print(f"{args.namespace}/{name}: {phase}", file=sys.stderr)
        print(dump(wf))
        return 0 if phase == "Succeeded" else 2
    except (HeraException, requests.RequestException) as e:
        print(f"request failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except pydantic.ValidationError as e:
        # hera parses every answer into its models: Workflow needs metadata
        # and spec, WorkflowList needs metadata, a status node id/name/type.
        print(f"the server's answer is not a valid Argo object for hera: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
