"""The classroom network: hotspot (hostapd), DHCP and router advertisements (dnsmasq), the
nftables ruleset, captive-portal sessions and the privileged helper that edits them.

Offers others (see OFFERS): `probes` (the OS captive-portal probes and their online answers),
`leases` (`lookup(ip) -> mac | None`, `devices()`: who is on the classroom, from dnsmasq's leases
and the neighbour table), `answers` (the local answers table every classroom DNS must honour),
`client` (`call(socket, verb, args)`: the privileged helper's verbs, e.g. the device
inventory's `open-service`, and `usb_drive(socket, device)` for USB import; the helper decides
who may call what), `dnssets` (the address files a classroom DNS writes for the helper's DoH and
walled-garden sets) and `usb` (which block devices `usb-mount` accepts: its pure checks). Everything else is
private: the renderers (`render`), check/apply (`apply`), the helper (`helperd`, `verbs`, `nft`,
`sessions`), the captive responder (`captive`) and the portal's `/captive/` pages
(`portal_views`). See docs/network.md.
"""

# The modules other capabilities may import; everything else here is private (a test checks).
OFFERS = ("probes", "leases", "answers", "client", "dnssets", "usb")
