"""`illuma backups create|list|verify|restore|check` on a DuckDB warehouse of the test's own."""


import pytest

from illuma_pipelines.cli import main
from illuma_pipelines.registry import add_merchant
from illuma_pipelines.warehouse import Warehouse


@pytest.fixture
def cli_env(backup_key, monkeypatch, tmp_path):
    monkeypatch.setenv("ILLUMA_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.delenv("ILLUMA_BACKUP_S3_BUCKET", raising=False)
    url = f"duckdb:///{tmp_path / 'var' / 'data' / 'warehouse.duckdb'}"
    wh = Warehouse.from_url(url)
    wh.ensure_platform()
    add_merchant(wh, "cli_backup")
    return url


def test_create_list_verify_restore_check(cli_env, tmp_path, capsys):
    base = ["--warehouse-url", cli_env, "backups"]
    assert main([*base, "create", "--expire"]) == 0
    out = capsys.readouterr().out
    backup_id = out.split()[1].rstrip(":")
    assert backup_id.startswith("wh-") and "1 merchants" in out
    assert main([*base, "list"]) == 0
    assert backup_id in capsys.readouterr().out
    assert main([*base, "verify", backup_id]) == 0
    assert "decrypted and checked" in capsys.readouterr().out
    assert main([*base, "restore", backup_id, "--into", cli_env]) == 2
    assert "is the live warehouse" in capsys.readouterr().err
    target = f"duckdb:///{tmp_path / 'copy' / 'warehouse.duckdb'}"
    assert main([*base, "restore", backup_id, "--into", target]) == 0
    assert "tables compared with the manifest" in capsys.readouterr().out
    assert main([*base, "check"]) == 0
    assert f"restore check of {backup_id}: ok" in capsys.readouterr().out
    assert main([*base, "verify", "not-a-backup"]) == 2
    assert "is not a backup id" in capsys.readouterr().err
