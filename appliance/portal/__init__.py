"""The student portal: the page every device on the classroom Wi-Fi lands on.

It holds no admin surface at all: admin pages live on the console, on another network. Later
capabilities (content library, Moodle mirror, captive-portal probes, block page) arrive as
blueprints registered in `app.BLUEPRINTS`.

The factory lives in `appliance.portal.app`, not here, so that importing this package (as
`appliance <any command>` does through `appliance.portal.cli`) does not load Flask and every
blueprint into services that never serve a page.
"""
