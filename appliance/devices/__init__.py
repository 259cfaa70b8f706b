"""The device inventory: which devices are on the classroom network, what they are, and which
displays and printers they may find.

Owns the DHCP hook (`dhcp-event`, a shell script dnsmasq runs as its unprivileged
`dhcp-scriptuser`, appending one line per lease event to a spool), the spool reader, the
fingerprints (`fingerprint`: kind and OS family with evidence from option 55, vendor class,
mDNS records and captive-portal probe counts; OUI vendor from aiooui, never for randomized
MACs), the inventory tables in `appliance.db` (`schema`, `inventory`), mDNS on the classroom
interface (python-zeroconf: browsing every type, advertising the portal, answering staff
devices with the shared services across client isolation), `appliance devices ...` and the
agent's `devices` summary. Hostnames, MACs and TXT identifiers never leave the Pi.

Offers others (see OFFERS): `fingerprint` (pure identification), `events` (the hook's line
format) and `inventory` (reads, `add_probes()` for the portal's probe counts, `set_group()` for
the network capability's sessions), `spool` (`HOOK`, the `dhcp-script` the network's dnsmasq
runs).
"""

# The modules other capabilities may import; everything else here is private (a test checks).
OFFERS = ("fingerprint", "events", "inventory", "spool")
