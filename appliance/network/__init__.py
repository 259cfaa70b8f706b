"""The classroom network: hotspot (hostapd), DHCP and router advertisements (dnsmasq), the
nftables ruleset, captive-portal sessions and the privileged helper that edits them.

Offers others (see OFFERS): `probes` (the OS captive-portal probes and their online answers).
More arrive with the network issue: the lease and neighbour reader and the local answers table.
"""

# The modules other capabilities may import; everything else here is private (a test checks).
OFFERS = ("probes",)
