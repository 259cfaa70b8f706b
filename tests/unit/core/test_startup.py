"""Every service starts through `appliance.cli`; what that import loads stays in every process.

A devices or filter service that imported Flask, Jinja, libzim and every blueprint because the
command table did would carry ~30 MB it never uses, on a 512 MB Pi running six services.
"""

from __future__ import annotations

import json
import subprocess
import sys

# Libraries only the services that need them may load: web apps, archives, mDNS, MQTT.
HEAVY = ("flask", "werkzeug", "jinja2", "libzim", "zeroconf", "paho", "nh3", "babel")


def test_the_command_table_loads_no_heavy_library() -> None:
    code = "import json, sys, appliance.cli; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                           capture_output=True, text=True).stdout))
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}, sorted(
        m for m in loaded if m.split(".")[0] in HEAVY)


def test_a_web_app_still_loads_them() -> None:
    # The guard above must be able to fail: the factory does pull Flask in.
    code = "import json, sys, appliance.portal.app; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                           capture_output=True, text=True).stdout))
    assert "flask" in loaded
