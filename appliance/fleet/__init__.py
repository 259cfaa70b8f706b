"""The fleet: the appliance's agent and the MQTT contract it shares with the console.

Owns the agent (health sampling, outbox, presence), the topic layout (`topics.py`, the one place
topics are built), the payload schema (`payloads.py`), the MQTT session and backoff, the lab's
broker (`broker.py`) and the fleet's certificate authority (`pki.py`).

Offers others (see OFFERS): `topics`, `payloads`, `session` and `summaries` (the summary specs
and registry) to the console;
`broker` and `pki` to the lab and provisioning.
"""

# The modules other capabilities may import; everything else here is private (a test checks).
OFFERS = ("topics", "payloads", "session", "broker", "pki", "summaries")
