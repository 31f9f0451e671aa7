"""schemathesis hooks for scripts/fuzz-api: checks of our own contract beyond the OpenAPI document.

Loaded through SCHEMATHESIS_HOOKS; a check registered here runs on every response.
"""

import json
import os

import schemathesis


@schemathesis.check
def errors_are_problem_json(ctx, response, case):
    """Every error answer is application/problem+json (RFC 9457) with the fields we promise:
    `type`, `title`, `status` (the response's own) and `detail`; `errors` names fields."""
    if response.status_code < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != "application/problem+json":
        raise AssertionError(
            f"{response.status_code} answered as `{content_type or 'no Content-Type'}`, "
            "not application/problem+json"
        )
    try:
        problem = json.loads(response.content)
    except ValueError as e:
        raise AssertionError(f"{response.status_code}: the problem is not JSON ({e})") from None
    if not isinstance(problem, dict):
        raise AssertionError(f"{response.status_code}: the problem is not a JSON object")
    for field, kind in (("type", str), ("title", str), ("status", int), ("detail", str)):
        if not isinstance(problem.get(field), kind):
            raise AssertionError(f"{response.status_code}: the problem has no `{field}` of type {kind.__name__}")
    if problem["status"] != response.status_code:
        raise AssertionError(
            f"the problem says status {problem['status']}, the response is {response.status_code}"
        )
    for error in problem.get("errors") or []:
        if not (isinstance(error, dict) and isinstance(error.get("field"), str) and error["field"]):
            raise AssertionError(f"{response.status_code}: an entry of `errors` names no field: {error!r}")
    return None


# The token the fuzzer authenticates with (scripts/fuzz-api sets it). `DELETE /api/v1/tokens/{id}`
# with a small id would revoke it, and every later request would get 401: that one request is sent
# for another id (which the server then rightly answers 404).
FUZZ_TOKEN_ID = int(os.environ.get("FUZZ_TOKEN_ID", "0") or 0)


@schemathesis.hook
def before_call(ctx, case, kwargs):
    if not FUZZ_TOKEN_ID or case.method.upper() != "DELETE" or not case.path.startswith("/api/v1/tokens/"):
        return
    value = (case.path_parameters or {}).get("id")
    try:
        same = int(str(value)) == FUZZ_TOKEN_ID
    except ValueError:
        same = False
    if same:
        case.path_parameters["id"] = str(FUZZ_TOKEN_ID + 1_000_000_000)
