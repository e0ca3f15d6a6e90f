"""An expense approval: file the request, ask for approval, wait for an "approved" event.

Params: {"amount": 120, "by": "li", "timeout": "1 hour"}

The instance waits (holding no isolate) until an event of type "approved" arrives or the
timeout passes; an event sent before the wait is buffered and taken when the wait starts.

Try it:  tenantflow run examples/approval.py --params '{"amount": 120}' --event 'approved={"by": "ana"}'
         tenantflow run examples/approval.py --params '{"amount": 120}'      # times out after 1 h (simulated)
"""

from tenantflow import WaitTimeoutError


def run(event, step):
    params = event.payload or {}
    amount = params.get("amount", 0)

    request = step.do("file request", lambda: {"amount": amount, "by": params.get("by", "someone")})
    step.do("notify approver", lambda: f"please approve {request['amount']} for {request['by']}")

    try:
        approval = step.wait_for_event("approval", event_type="approved", timeout=params.get("timeout", "1 hour"))
    except WaitTimeoutError:
        step.do("escalate", lambda: "no answer in time: escalated to finance")
        return {"approved": False, "amount": amount, "reason": "timed out"}

    approver = (approval["payload"] or {}).get("by", "unknown")
    payout = step.do("pay out", lambda: {"paid": amount, "to": request["by"]})
    return {"approved": True, "by": approver, **payout}
