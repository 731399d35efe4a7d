"""The missing-service rule every service test follows: fail under CI, skip loudly elsewhere."""

import pytest

from tests.processes import free_port, port_open, service_unavailable


def test_a_missing_service_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set: the celery tests must run"):
        service_unavailable("Celery tests", "RabbitMQ at 127.0.0.1:5672 unreachable")


def test_a_missing_service_skips_loudly_elsewhere(monkeypatch, capsys):
    monkeypatch.delenv("CI", raising=False)
    with pytest.warns(UserWarning, match="SKIPPING CELERY TESTS"), pytest.raises(pytest.skip.Exception, match="unreachable"):
        service_unavailable("Celery tests", "RabbitMQ at 127.0.0.1:5672 unreachable")
    assert "SKIPPING CELERY TESTS: RabbitMQ at 127.0.0.1:5672 unreachable" in capsys.readouterr().err


def test_a_free_port_is_free():
    assert not port_open(free_port(), timeout=0.5)
