"""The agent's HTTP client reads the environment once (not per request) and
still honours it: proxies, NO_PROXY, the CA bundle."""
from agents.client import RegionClient


def test_proxies_and_ca_bundle_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/private-ca.pem")
    far = RegionClient("http://region.example:8000")
    assert far.session.proxies["http"] == "http://proxy.example:3128"
    assert far.session.verify == "/etc/ssl/private-ca.pem" and far.session.trust_env is False
    assert "http" not in RegionClient("http://127.0.0.1:8000").session.proxies
