"""Schemathesis hooks for scripts/test.

schemathesis calls the API as the demo's only admin. Left alone, it soon removes that admin or
demotes it to agent (legal once it has created a second admin, or once links hand it the
admin's id from GET /v1/me), and every later request then gets 401 or 403: the rest of the run
tests nothing but authentication. So requests that would remove or demote the caller itself are
sent to an agent id that does not exist instead (404); every other agent stays fair game.

scripts/test sets FRONTDESK_ST_ADMIN_AGENT_ID to the caller's agent id (from GET /v1/me).
"""

import os
import uuid

import schemathesis

ADMIN_AGENT_ID = os.environ.get("FRONTDESK_ST_ADMIN_AGENT_ID", "").lower()


def _locks_the_caller_out(case) -> bool:
    if not ADMIN_AGENT_ID or case.operation.path != "/v1/agents/{agent_id}":
        return False
    if str((case.path_parameters or {}).get("agent_id", "")).lower() != ADMIN_AGENT_ID:
        return False
    method = case.method.upper()
    if method == "DELETE":
        return True
    if method == "PATCH":
        body = case.body
        return isinstance(body, dict) and body.get("role") not in (None, "admin")
    return False


@schemathesis.hook
def before_call(context, case, kwargs):
    if _locks_the_caller_out(case):
        case.path_parameters = {**case.path_parameters, "agent_id": str(uuid.uuid4())}
