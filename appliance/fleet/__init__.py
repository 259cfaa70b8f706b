"""Fleet reporting: the agent on each appliance and the MQTT contract it shares with the console.

`topics` builds every topic, `payloads` builds and parses every message (pure), `health` reads the
machine, `agent` runs the MQTT session, `broker` starts a Mosquitto for the lab and the tests.
"""
