"""The dev homeserver's configuration: federating servers on loopback, work-dir reuse."""

from __future__ import annotations

import json
import socket

import pytest
from cryptography import x509

from bot.devserver import CONFIG_FILE, TLS_CERT_FILE, TLS_KEY_FILE, Synapse, SynapseError


def written_config(server: Synapse) -> dict:
    server._write_config()
    return json.loads((server.workdir / CONFIG_FILE).read_text())


def test_a_plain_server_has_no_federation_listener_or_loopback_allowance(tmp_path):
    server = Synapse(tmp_path, "python")
    config = written_config(server)
    assert server.server_name == "localhost" and server.federation_port is None
    assert [r["names"] for listener in config["listeners"] for r in listener["resources"]] == [
        ["client"]
    ]
    assert "ip_range_whitelist" not in config
    assert not (tmp_path / TLS_KEY_FILE).exists()


def test_a_federating_server_is_named_after_its_tls_federation_port(tmp_path):
    server = Synapse(tmp_path, "python", federation=True)
    config = written_config(server)
    assert server.server_name == f"localhost:{server.federation_port}"
    assert server.federation_port != server.port
    federation = [
        listener for listener in config["listeners"]
        if any("federation" in r["names"] for r in listener["resources"])
    ]
    assert len(federation) == 1
    assert federation[0]["port"] == server.federation_port and federation[0]["tls"] is True
    assert federation[0]["bind_addresses"] == ["127.0.0.1"]
    assert "127.0.0.0/8" in config["ip_range_whitelist"]
    assert config["trusted_key_servers"] == []
    certificate = x509.load_pem_x509_certificate((tmp_path / TLS_CERT_FILE).read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert (tmp_path / TLS_KEY_FILE).stat().st_mode & 0o077 == 0


def test_a_reused_federating_work_dir_keeps_its_name_ports_and_certificate(tmp_path):
    first = Synapse(tmp_path, "python", federation=True)
    first._write_config()
    certificate = (tmp_path / TLS_CERT_FILE).read_bytes()
    again = Synapse(tmp_path, "python", federation=True)
    again._write_config()
    assert (again.server_name, again.port, again.federation_port) == (
        first.server_name, first.port, first.federation_port
    )
    assert (tmp_path / TLS_CERT_FILE).read_bytes() == certificate


def test_a_work_dir_is_not_reused_across_federation_modes(tmp_path):
    Synapse(tmp_path / "plain", "python")
    Synapse(tmp_path / "federating", "python", federation=True)
    with pytest.raises(ValueError, match="holds a non-federating"):
        Synapse(tmp_path / "plain", "python", federation=True)
    with pytest.raises(ValueError, match="holds a federating"):
        Synapse(tmp_path / "federating", "python")
    with pytest.raises(ValueError, match="localhost:<federation port>"):
        Synapse(tmp_path / "named", "python", server_name="example.test", federation=True)


def _listening_on(port: int) -> socket.socket:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", port))
    holder.listen()
    return holder


def test_a_copied_work_dir_whose_port_is_taken_moves_to_a_free_one_keeping_its_name(tmp_path):
    recorded = Synapse(tmp_path, "python")
    with _listening_on(recorded.port):
        server = Synapse(tmp_path, "python", move_if_busy=True)
        server._claim_ports()
    assert server.port != recorded.port and server.server_name == "localhost"
    assert server.base_url == f"http://127.0.0.1:{server.port}"
    assert written_config(server)["listeners"][0]["port"] == server.port
    # The move is recorded: the next start from this work dir uses the new port.
    assert Synapse(tmp_path, "python").port == server.port


def test_a_taken_port_is_an_error_unless_moving_was_asked_for(tmp_path):
    server = Synapse(tmp_path, "python")
    with _listening_on(server.port), pytest.raises(SynapseError, match="is busy"):
        server._claim_ports()
    assert Synapse(tmp_path, "python").port == server.port


def test_a_federating_server_cannot_move_because_its_name_has_the_port(tmp_path):
    with pytest.raises(ValueError, match="cannot move"):
        Synapse(tmp_path, "python", federation=True, move_if_busy=True)
