"""The missing-service rule every service test follows: fail under CI, skip loudly elsewhere."""

import warnings

import pytest

from tests.processes import free_port, port_open, service_unavailable


def test_a_missing_service_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set: the celery tests must run"):
        service_unavailable("Celery tests", "RabbitMQ at 127.0.0.1:5672 unreachable")


def test_a_missing_service_skips_loudly_elsewhere(monkeypatch, capsys):
    monkeypatch.delenv("CI", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(pytest.skip.Exception) as skipped:
            service_unavailable("Celery tests", "RabbitMQ at 127.0.0.1:5672 unreachable")
    # The test is skipped (not failed, not passed) with the reason, a warning pytest's summary
    # lists, and the banner on stderr.
    assert str(skipped.value) == "RabbitMQ at 127.0.0.1:5672 unreachable"
    assert [w.category for w in caught] == [UserWarning]
    assert "SKIPPING CELERY TESTS: RabbitMQ at 127.0.0.1:5672 unreachable" in str(caught[0].message)
    assert "SKIPPING CELERY TESTS: RabbitMQ at 127.0.0.1:5672 unreachable" in capsys.readouterr().err


def test_a_free_port_is_free():
    assert not port_open(free_port(), timeout=0.5)
