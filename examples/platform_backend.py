"""A platform backend driving tenantflow with the Python client only (`tenantflow.client`).

It provisions a tenant with the operator key, deploys the approval workflow as that tenant, starts an
instance, sends it the event it waits for and awaits the result, then cleans up.

    TENANTFLOW_OPERATOR_KEY=tf_... python examples/platform_backend.py [--url http://127.0.0.1:8787] [--keep]
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path

from tenantflow.client import Client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("TENANTFLOW_URL", "http://127.0.0.1:8787"))
    parser.add_argument("--tenant", default=f"customer-{uuid.uuid4().hex[:8]}")
    parser.add_argument("--keep", action="store_true", help="Keep the tenant (default: delete it at the end).")
    args = parser.parse_args()
    operator_key = os.environ.get("TENANTFLOW_OPERATOR_KEY")
    if not operator_key:
        print("set TENANTFLOW_OPERATOR_KEY to an operator key (tenantflow admin create-key NAME)", file=sys.stderr)
        return 2

    with Client(args.url, operator_key) as admin:
        # 1. Provision: one tenant per customer, with its own quotas; its key is shown this once.
        tenant = admin.create_tenant(args.tenant, {"max_concurrent": 4, "max_instances_per_minute": 600})
        print(f"tenant {tenant.name}: max_concurrent={tenant.quotas.max_concurrent}")
        try:
            # 2. Act as the tenant: deploy its workflow, start an instance, deliver its event, await it.
            with Client(args.url, tenant.api_key) as client:
                approval = client.workflow("approval")
                source = (Path(__file__).parent / "approval.py").read_text()
                print(f"deployed version {approval.deploy(source).version}")
                instance = approval.start({"amount": 120, "by": "li"})
                waiting = instance.wait(statuses={"waiting"}, timeout=30)
                print(f"instance {instance.id} is {waiting.status}")
                instance.send_event("approved", {"by": "ana"})
                print("result:", instance.result(timeout=30))
        finally:
            if not args.keep:
                deleted = admin.delete_tenant(tenant.name)
                print(f"deleted {deleted.name}: {deleted.workflows} workflow(s), {deleted.instances} instance(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
