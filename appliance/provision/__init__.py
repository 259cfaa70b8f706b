"""Provisioning: how a fresh Pi becomes a member of the fleet.

Owns the one-time enrollment tokens and their audit log (console side: `tokens`, the `/enroll`
endpoint in `console_views`, `appliance enrollment-token`, `appliance revoke-device`), the
enrollment client that makes the Pi's key and CSR and stores the signed certificate (`client`,
`appliance enroll`), and first boot (`firstboot`, `appliance firstboot`: the settings file on
the boot partition becomes the appliance's configuration). The CA key stays on the console;
signing and revocation are the fleet's `pki`.

Offers nothing to other capabilities beyond its registration modules.
"""

# The modules other capabilities may import; everything else here is private (a test checks).
OFFERS: tuple[str, ...] = ()
