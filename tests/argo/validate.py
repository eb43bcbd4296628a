#!/usr/bin/env python3
"""Validate Argo Workflows documents against Argo's published schema.

Usage: validate.py FILE... ('-' reads standard input)

Each FILE holds JSON or YAML (YAML may hold several documents separated by
'---'). A document is one of
  * a bare resource: kind Workflow, WorkflowTemplate, ClusterWorkflowTemplate
    or CronWorkflow (a document without 'kind' is taken as a Workflow);
  * an Argo Server request body: {"workflow": {...}, "serverDryRun": ...}
    (create/lint a workflow) or {"template": {...}} (create/lint a template).

The schema is the one hera ships: hera.workflows.models are pydantic models
generated from Argo's OpenAPI spec (swagger.json) of one Argo release, printed
on the first line. Documents are validated the way the Argo server decodes
JSON, only stricter than Go about unknown keys:
  * unknown fields are refused: validation runs with extra="forbid", which
    pydantic (>= 2.12) applies to every nested model (the models themselves
    are generated with the default extra="ignore" and would drop them);
  * wrong types are refused: strict mode on the JSON text, so no "3" -> 3 or
    "true" -> True coercion; a JSON number where a string is declared (e.g.
    spec.entrypoint: 3) is an error, as it is for the Argo server;
  * required fields (e.g. a DAG task's 'name') must be present;
  * 'apiVersion', when present, must be argoproj.io/v1alpha1.
Not checked: semantic rules the Argo controller/linter applies (entrypoint
names an existing template, DAG dependencies exist, no cycles, ...).
Known strictness beyond Go: Kubernetes quantities (resources.limits.cpu,
...) are declared as strings in the spec, so a bare number such as `cpu: 1`
is refused here although Kubernetes would accept it; quote it.

Exit status: 0 when every document is valid, 1 when any is not (each error
names the file, the document and the field path), 2 on a usage/read error.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from importlib import metadata
from typing import Any, Iterator

try:
    import pydantic
    from hera.workflows import models as hera_models
except ImportError as e:  # pragma: no cover - depends on the environment
    sys.exit(f"validate.py: {e}; install tests/argo/requirements.txt (pip install -r tests/argo/requirements.txt)")

API_VERSION = "argoproj.io/v1alpha1"

BARE_KINDS = {
    "Workflow": hera_models.Workflow,
    "WorkflowTemplate": hera_models.WorkflowTemplate,
    "ClusterWorkflowTemplate": hera_models.ClusterWorkflowTemplate,
    "CronWorkflow": hera_models.CronWorkflow,
}
# Request bodies of the Argo Server API: the key that holds the resource, the
# pydantic model of the whole body (the create request is a superset of the
# lint request: it also has serverDryRun, createOptions, instanceID).
BODY_FORMS = {
    "workflow": ("Workflow", hera_models.WorkflowCreateRequest),
    "template": ("WorkflowTemplate", hera_models.WorkflowTemplateCreateRequest),
    "cronWorkflow": ("CronWorkflow", hera_models.CreateCronWorkflowRequest),
}


def argo_version() -> str:
    """The Argo release whose OpenAPI spec hera's models were generated from."""
    doc = hera_models.__doc__ or ""
    m = re.search(r"argo-workflows/(v[0-9][^/]*)/api/openapi-spec", doc)
    return m.group(1) if m else "unknown"


def banner() -> str:
    return (
        f"schema: Argo Workflows {argo_version()} OpenAPI spec, "
        f"as hera {metadata.version('hera')} models (pydantic {pydantic.VERSION}); "
        "unknown fields and wrong types are refused"
    )


def check_pydantic() -> None:
    params = inspect.signature(pydantic.BaseModel.model_validate_json).parameters
    if "extra" not in params:
        sys.exit(
            f"validate.py: pydantic {pydantic.VERSION} cannot refuse unknown fields at validation "
            "time (model_validate_json has no 'extra'); install tests/argo/requirements.txt"
        )


def read_documents(arg: str) -> Iterator[tuple[str, Any]]:
    """Yield (label, document) for each document of one file argument."""
    name = "<stdin>" if arg == "-" else arg
    text = sys.stdin.read() if arg == "-" else open(arg, encoding="utf-8").read()
    stripped = text.lstrip()
    if stripped.startswith("{") or stripped.startswith("["):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{name}: not valid JSON: {e}") from None
        docs = doc if isinstance(doc, list) else [doc]
    else:
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{name}: not JSON, and PyYAML is not installed to read YAML") from None
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as e:
            raise ValueError(f"{name}: not valid YAML: {e}") from None
    if not docs:
        raise ValueError(f"{name}: no document")
    for i, doc in enumerate(docs):
        yield (name if len(docs) == 1 else f"{name}#{i}"), doc


def field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(document)"


def short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def classify(doc: Any) -> tuple[str, type, str]:
    """Return (what, model, prefix): the pydantic model for the whole
    document and the field path prefix of the resource inside it."""
    if not isinstance(doc, dict):
        raise ValueError(f"document is a {type(doc).__name__}, not an object")
    if "kind" not in doc and "spec" not in doc:
        for key, (kind, model) in BODY_FORMS.items():
            if key in doc:
                return f"{model.__name__} body ({kind})", model, key
    kind = doc.get("kind", "Workflow")
    if kind not in BARE_KINDS:
        raise ValueError(f"kind: {short(kind)} is not one of {', '.join(BARE_KINDS)}")
    return kind, BARE_KINDS[kind], ""


def validate(doc: Any) -> tuple[str, list[str]]:
    """Validate one document; return (description, list of error lines)."""
    try:
        what, model, prefix = classify(doc)
    except ValueError as e:
        return "?", [str(e)]
    errors: list[str] = []
    resource = doc.get(prefix) if prefix else doc
    if isinstance(resource, dict):
        api_version = resource.get("apiVersion")
        if api_version is not None and api_version != API_VERSION:
            path = f"{prefix}.apiVersion" if prefix else "apiVersion"
            errors.append(f"{path}: {short(api_version)} is not {API_VERSION}")
        kind = resource.get("kind")
        expected = what if not prefix else BODY_FORMS[prefix][0]
        if prefix and kind is not None and kind != expected:
            errors.append(f"{prefix}.kind: {short(kind)} is not {expected}")
        meta = resource.get("metadata") if isinstance(resource.get("metadata"), dict) else {}
        name = meta.get("name") or meta.get("generateName")
        if name:
            what += f" {name}"
    try:
        model.model_validate_json(json.dumps(doc), strict=True, extra="forbid")
    except pydantic.ValidationError as e:
        for err in e.errors(include_url=False):
            path = field_path(err["loc"])
            if err["type"] == "extra_forbidden":
                errors.append(f"{path}: unknown field (not in the Argo schema)")
            elif err["type"] == "missing":
                errors.append(f"{path}: required field missing")
            else:
                errors.append(f"{path}: {err['msg']} (got {short(err.get('input'))})")
    return what, errors


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    check_pydantic()
    print(banner())
    bad = 0
    for arg in argv:
        try:
            documents = list(read_documents(arg))
        except (OSError, ValueError) as e:
            print(f"ERROR {e}", file=sys.stderr)
            return 2
        for label, doc in documents:
            what, errors = validate(doc)
            if errors:
                bad += 1
                print(f"INVALID {label}: {what}", file=sys.stderr)
                for line in errors:
                    print(f"  {label}: {line}", file=sys.stderr)
            else:
                print(f"ok {label}: {what}")
    if bad:
        print(f"{bad} invalid document(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
