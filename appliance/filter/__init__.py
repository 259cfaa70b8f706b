"""The classroom's DNS filter: `appliance filter serve` on port 53, with unbound behind it.

Owns the DNS protocol (`wire`, pure), the compiled category lists (`lists`: parse hosts, plain,
adblock and UT1 folders; compile to a memory-mapped matcher swapped atomically), the policy
(`policy`, pure: groups, categories, SafeSearch, schedules, exam mode, overrides, canaries,
`explain`), the answer to one query (`resolver`: cache, CNAME chains; no sockets), its persisted
state (`state`, `schema`: exams, overrides, audit log, statistics in `appliance.db`), the server
(`server`: UDP and TCP threads, upstream, rate limit), the operations each command and the
console call (`service`), the unbound configurations (`unbound`: the upstream's, and the
baseline policy used when the filter is down), the portal's block page and "why is this site
blocked?" (`portal_views`), its part of the lab (`lab`) and the console summary (`summary`).
With `[filter] enabled` it is the classroom's DNS: it takes from the network capability its lease
and neighbour reader (`leases`), its local answers (`answers`) and the address files for the
helper's sets (`dnssets`), behind the protocols of `identity`. See docs/filter.md.

Offers others (see OFFERS): `policy` (decisions and `explain`, for the portal's "why is this
site blocked?" and the console), `identity` (the protocols `Identity` ip -> mac and `LocalAnswers`, and their
network-backed implementations), `unbound` (the baseline config the network helper switches the
redirect to).
"""

# The modules other capabilities may import; everything else here is private (a test checks).
OFFERS = ("policy", "identity", "unbound")
