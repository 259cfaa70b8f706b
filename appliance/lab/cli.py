"""`appliance lab`: the whole fleet on one machine."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from appliance.command import stop_on_signal


@click.command("lab")
@click.option("--appliances", "count", default=2, show_default=True,
              type=click.IntRange(1, 50), help="How many simulated appliances to run.")
@click.option("--dir", "directory", default=Path("lab"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Where the lab keeps configs, databases and logs.")
@click.option("--base-port", default=8800, show_default=True, type=click.IntRange(1024, 65000),
              help="Broker on BASE, console on BASE+1, appliance N's portal on BASE+10+N.")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(0.5, 60),
              help="Seconds between health samples of each agent.")
@click.option("--classroom", is_flag=True,
              help="Put the first appliance in a virtual classroom (network namespaces: its Pi, "
                   "three phones, a fake internet); needs root.")
@click.option("--offline", is_flag=True, help="With --classroom: start with the uplink cut.")
def lab(count: int, directory: Path, base_port: int, interval: float, classroom: bool,
        offline: bool) -> None:
    """Run a whole fleet on this machine: broker, console and N appliances, all on loopback.

    Prints the URLs, runs until Ctrl-C, then stops every process cleanly (and, with
    --classroom, removes every namespace).
    """
    if offline and not classroom:
        raise click.UsageError("--offline needs --classroom")
    from appliance.lab.runner import Lab, LabError

    logging.basicConfig(level="INFO", format="%(asctime)s lab: %(message)s", stream=sys.stderr)
    try:
        the_lab = Lab(directory.resolve(), count=count, base_port=base_port, interval=interval,
                      options={"classroom": classroom, "offline": offline})
        the_lab.run(stop_on_signal(), out=click.echo)
    except LabError as exc:
        raise click.ClickException(str(exc)) from None


COMMANDS: tuple[click.Command, ...] = (lab,)
