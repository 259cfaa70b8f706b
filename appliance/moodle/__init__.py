"""The Moodle mirror: the school's Moodle courses readable on the hotspot when the internet is down.

Owns the web-service client (`client`), the parsed course model (`model`), the sync planner
(`planner`, pure), the HTML sanitizer and URL rewriter (`sanitize`, pure), the blob store and
resumable fetch (`blobs`), the mirror itself (`mirror`: sync, atomic swap per course, status),
its tables (`schema`), who may read a course (`access`: open or sign-in, the sign-in's rate
limits and offline hashes), the portal pages (`portal_views`, under `/moodle`, with the sign-in
form on HTTPS and `may_see`, which the library's search asks about its Moodle hits), the commands
(`appliance moodle sync|status|rerender`), the summary on the console's device page
(`summary`), and a replay of recorded Moodle traffic for tests and the lab (`replay`, `lab`).

Offers `mirror` (sync and status for a later console trigger) and `replay` to others.
"""

# The modules other capabilities may import; everything else here is private (a test checks).
OFFERS: tuple[str, ...] = ("mirror", "replay")
