"""An agent turn with its tool calls at once: an async workflow whose steps run side by side.

The "model" plans which tools to call, the tools run together (each a durable step of its own,
retried on its own: the flaky one fails its first attempt), and the answer is put together from
what they returned. Each tool's latency stands in for an HTTP call to a model or tool API; with
`tools_url` in the params (a host on the tenant's egress allowlist), each tool is a real
`fetch_async` to `{tools_url}/{tool}` instead.

Params: {"question": "weather in Lisbon?", "latency_ms": 300, "tools_url": null}

Try it:  tenantflow run examples/agent_tools.py --params '{"question": "weather in Lisbon?"}'
"""

import asyncio

from tenantflow import fetch_async

TOOLS = ["search", "weather", "calendar", "maps", "news"]


async def run(event, step):
    params = event.payload or {}
    question = params.get("question", "weather in Lisbon?")
    latency_s = params.get("latency_ms", 300) / 1000
    tools_url = params.get("tools_url")

    plan = await step.do("plan", lambda: [t for t in TOOLS if t != "news" or "news" in question])

    async def call_tool(ctx, tool):
        if tools_url:
            answer = await fetch_async(f"{tools_url}/{tool}", method="POST", body=question)
            return {"tool": tool, "status": answer.status}
        await asyncio.sleep(latency_s)  # the tool's latency; the others run meanwhile
        if tool == "weather" and ctx.attempt == 1:
            raise ConnectionError("weather API timed out")
        return {"tool": tool, "answer": f"{tool} says yes", "attempt": ctx.attempt}

    results = await asyncio.gather(
        *(
            step.do(
                f"tool {tool}",
                {"retries": {"limit": 2, "delay": "100 milliseconds"}},
                lambda ctx, t=tool: call_tool(ctx, t),
            )
            for tool in plan
        )
    )

    @step.do("answer")
    async def answer():
        return {
            "question": question,
            "tools": [r["tool"] for r in results],
            "retried": [r["tool"] for r in results if r.get("attempt", 1) > 1],
        }

    return await answer()
