"""The soak run: the agent against the simulator, faults injected from a seed.

`python -m soak --seed 7 --duration 600` (what `make soak` runs) starts the
simulated gateway and the real agent with short intervals and backoffs, injects
the field's failures at random (expired and stolen sessions, dropped brokerage
sessions, 5xx windows, hangs, gateway crashes, login page variants, spurious
bad-password answers, jumps of the simulated clock over the nightly reset) and
prints how the agent fared: share of time ready, longest outage, logins and
second-factor prompts spent, the failure budget's high-water mark, leftover
browser processes and the agent's own memory, open files and threads.  It exits
1 when a safety property broke (docs/reliability.md).
"""
