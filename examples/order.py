"""An order: price it, reserve stock, charge the card through a flaky gateway (retried), ship.

Params: {"order": "A-1", "items": [{"sku": "tea", "qty": 2, "price": 4.5}], "declines": 2, "card": "ok",
         "courier_after": "2 hours"}

- The payment gateway times out on the first `declines` tries (default 2); the step is
  retried and the journal shows every attempt. Retries without a delay run in the same
  isolate, so the module-level counter below sees them. (A retry after a delay runs in a
  fresh isolate whose module globals start over: only the journal survives, as with any replay.)
- `"card": "stolen"` fails the charge with NonRetryableError, which is not retried: the
  workflow catches it and releases the reservation.

Try it:  tenantflow run examples/order.py --params '{"order": "A-1", "declines": 2}'
"""

from tenantflow import NonRetryableError, StepError

_gateway = {"calls": 0}  # lives as long as the isolate: one activation


def run(event, step):
    params = event.payload or {}
    order = params.get("order", event.instance_id)
    items = params.get("items") or [{"sku": "tea", "qty": 2, "price": 4.5}]
    declines = int(params.get("declines", 2))

    total = step.do("price order", lambda: round(sum(i["qty"] * i["price"] for i in items), 2))

    @step.do("reserve stock", retries={"limit": 3, "delay": "5 seconds", "backoff": "exponential"})
    def reservation():
        return {"id": f"R-{order}", "skus": [i["sku"] for i in items]}

    def charge_card():
        if params.get("card") == "stolen":
            raise NonRetryableError("card reported stolen")
        _gateway["calls"] += 1
        if _gateway["calls"] <= declines:
            raise ConnectionError(f"payment gateway timed out (call {_gateway['calls']})")
        return {"charged": total, "gateway_calls": _gateway["calls"]}

    try:
        charge = step.do("charge card", charge_card, retries={"limit": 5, "delay": 0}, timeout="30 seconds")
    except (NonRetryableError, StepError) as error:
        step.do("release stock", lambda: f"released {reservation['id']}")
        return {"order": order, "status": "cancelled", "reason": str(error)}

    label = step.do("print label", lambda: f"LBL-{order}")
    step.sleep("wait for the courier", params.get("courier_after", "2 hours"))
    step.do("hand over", lambda: {"label": label, "courier": "swift"})
    return {"order": order, "status": "shipped", "total": total, "charge": charge, "label": label}
