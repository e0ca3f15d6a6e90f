"""An agent loop: think, act, observe, for as many turns as it takes, every call a durable step.

The "agent" guesses a hidden number by asking a tool whether to go higher or lower. Each turn
is two steps with the same names ("think", "act"); the journal keys them by (name, n-th call),
so the loop replays exactly. Progress is logged every 10 turns with a short durable sleep,
as an agent would pause for a rate limit.

Params: {"secret": 737, "low": 0, "high": 1000000, "max_turns": 60}

Try it:  tenantflow run examples/agent_loop.py --params '{"secret": 737}'
"""


def run(event, step):
    params = event.payload or {}
    secret = params.get("secret", 737)
    low, high = params.get("low", 0), params.get("high", 1_000_000)
    max_turns = params.get("max_turns", 60)

    history = []
    for turn in range(1, max_turns + 1):
        # Bind the loop's current values (default arguments), as with any closure made in a loop.
        guess = step.do("think", lambda lo=low, hi=high: (lo + hi) // 2)
        observation = step.do("act", lambda g=guess: "found" if g == secret else "higher" if g < secret else "lower")
        history.append([guess, observation])
        if observation == "found":
            break
        if observation == "higher":
            low = guess + 1
        else:
            high = guess - 1
        if turn % 10 == 0:
            print(f"turn {turn}: between {low} and {high}")
            step.sleep("rate limit", "1 second")

    answer = step.do("answer", lambda: {"answer": history[-1][0], "found": history[-1][1] == "found"})
    return {**answer, "turns": len(history)}
