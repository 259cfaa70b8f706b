"""`appliance agent`: health reporting to the console's broker (the systemd unit runs it)."""

from __future__ import annotations

import click

from appliance.command import pass_config, stop_on_signal
from appliance.config import Config


@click.command("agent")
@pass_config
def agent(cfg: Config) -> None:
    """Collect health and report it to the console's broker over MQTT."""
    from appliance.fleet.agent import Agent
    from appliance.store import open_db

    stop = stop_on_signal()
    Agent(cfg, open_db(cfg.database_path)).run(stop)


COMMANDS: tuple[click.Command, ...] = (agent,)
