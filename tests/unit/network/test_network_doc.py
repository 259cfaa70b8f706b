"""docs/network.md carries the probe table exactly as probes.py answers it."""

from __future__ import annotations

from pathlib import Path

from appliance.network import probes

DOC = Path(__file__).resolve().parents[3] / "docs" / "network.md"
BEGIN, END = "<!-- probe table: generated from appliance/network/probes.py -->", "<!-- end probe table -->"


def probe_table() -> str:
    rows = ["| platform | probe URL | before acceptance | after acceptance (online answer) |",
            "|---|---|---|---|"]
    for p in probes.PROBES:
        if p.https:
            after, before = "passes only with a real uplink", "TCP reset"
        elif p.login_trigger:
            after, before = "302 to the portal (it opens the sign-in page)", "302 to the portal"
        else:
            extra = "".join(f", `{k}: {v}`" for k, v in p.online.headers)
            body = f", body `{p.online.body.decode()!r}`" if p.online.body else ""
            after, before = f"{p.online.status}{body}{extra}", "302 to the portal"
        rows.append(f"| {p.platform} | `{p.url}` | {before} | {after.replace('|', '&#124;')} |")
    return "\n".join(rows)


def test_the_probe_table_in_the_doc_is_the_code():
    text = DOC.read_text()
    inside = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert inside == probe_table(), "regenerate: python -c 'from tests.unit.network.test_network_doc " \
                                    "import probe_table; print(probe_table())'"
