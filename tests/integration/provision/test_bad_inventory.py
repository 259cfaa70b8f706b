"""A bad inventory stops the play before anything changes: the tree is as it was (besides
Ansible's own temporary folder), and the message names the host and the variable."""

from __future__ import annotations

import pytest

from tests.integration.provision.district import converge, snapshot, unpack, write_inventory

pytestmark = pytest.mark.integration


@pytest.fixture
def attempt(tmp_path, rootfs_tarball, secrets, wheelhouse):
    def run(**inventory_args):
        tree = unpack(rootfs_tarball, tmp_path / "tree")
        before = snapshot(tree)
        inventory = write_inventory(
            tmp_path, secrets, {"pi-main": tree}, wheelhouse=wheelhouse, **inventory_args
        )
        result = converge(inventory, "playbooks/edge.yml", limit="pi-main")
        assert result.returncode != 0, result.output[-4000:]
        assert snapshot(tree) == before, "the play changed the tree before failing"
        # Stopped in the validation play: the converge play never started.
        assert "PLAY [Converge the edge Pis]" not in result.output
        # Ansible folds long messages over lines: compare with whitespace collapsed.
        return " ".join(result.output.split())

    return run


def test_malformed_building_id(attempt):
    output = attempt(building_ids={"pi-main": "Lincoln_Main"})
    assert 'pi-main: variable edge_building_id = "Lincoln_Main" is not a valid id' in output


def test_duplicate_building_ids(attempt):
    output = attempt(building_ids={"pi-main": "lincoln-annex"})
    assert (
        'pi-main: variable edge_building_id = "lincoln-annex" is also the building id of pi-annex' in output
    )


def test_missing_required_variable(attempt):
    output = attempt(drop=("edge_console_address",))
    assert "pi-main: variable edge_console_address is required and not set" in output


def test_console_address_that_does_not_resolve(attempt):
    output = attempt(extra={"edge_console_address": "no-such-console.invalid"})
    assert 'pi-main: variable edge_console_address = "no-such-console.invalid" does not resolve' in output


def test_moodle_without_a_sync_account(attempt):
    output = attempt(drop=("edge_moodle_password",))
    expected = "pi-main: the moodle capability needs either edge_moodle_username and edge_moodle_password"
    assert expected in output


def test_network_without_a_hotspot_passphrase(attempt):
    output = attempt(drop=("edge_hotspot_passphrase",))
    assert "pi-main: variable edge_hotspot_passphrase must be set, from the vault" in output
    assert "(got nothing)" in output


@pytest.mark.parametrize("passphrase", ["seven77", "x" * 64])
def test_hotspot_passphrase_of_a_bad_length(attempt, passphrase):
    output = attempt(extra={"edge_hotspot_passphrase": passphrase})
    assert "pi-main: variable edge_hotspot_passphrase must be set" in output
    assert f"(got {len(passphrase)} characters)" in output
    assert passphrase not in output  # its length only, never the secret


def test_hotspot_country_that_does_not_exist(attempt):
    output = attempt(extra={"edge_hotspot_country": "XX"})
    assert 'pi-main: variable edge_hotspot_country = "XX" is not an ISO 3166-1 alpha-2 country code' in output


def test_filter_without_the_network_before_it(attempt):
    output = attempt(extra={"edge_capabilities": ["portal", "agent", "filter", "network"]})
    assert "pi-main: variable edge_capabilities = " in output
    assert "lists filter without network before it" in output
