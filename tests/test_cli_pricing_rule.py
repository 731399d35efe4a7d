"""`illuma merchants pricing-rule`: set, list, refuse and delete a merchant's repricing rules through the CLI."""

from illuma_pipelines.cli import main
from illuma_pipelines.pricing import pricing_rules
from illuma_pipelines.registry import add_merchant


def test_pricing_rule_command_sets_lists_refuses_and_deletes(warehouse, warehouse_url, merchant_id, tmp_path, capsys):
    mid = merchant_id("cli")
    add_merchant(warehouse, mid)
    base = ["--warehouse-url", warehouse_url, "merchants", "pricing-rule", mid]
    assert main([*base, "--part-type", "*", "--strategy", "match_buy_box", "--min-margin", "15", "--referral-fee", "15",
                 "--fulfillment-fee", "3.22"]) == 0
    assert main([*base, "--sku", "A-1", "--strategy", "beat_lowest_by", "--beat-by", "2%", "--min-margin", "10",
                 "--referral-fee", "12"]) == 0
    out = capsys.readouterr().out
    assert "beat_lowest_by 2% (rule for SKU A-1) set" in out and "margin=15% referral=15% fulfillment_fee=3.22" in out
    assert main([*base, "--sku", "A-1", "--strategy", "match_buy_box", "--min-margin", "10", "--referral-fee", "100"]) == 2
    assert "referral_fee_percent: 100 must be at least 0 and below 100" in capsys.readouterr().err
    assert main([*base, "--sku", "A-1", "--min-margin", "3"]) == 2
    assert "--strategy is required" in capsys.readouterr().err
    rules = tmp_path / "rules.csv"
    rules.write_text("sku,strategy,min_margin_percent,referral_fee_percent\nB-1,stay_at_max_when_alone,20,15\n")
    assert main([*base, "--file", str(rules)]) == 0
    assert main([*base, "--sku", "A-1", "--delete"]) == 0
    assert {(r.scope, r.target) for r in pricing_rules(warehouse, mid)} == {("part_type", "*"), ("sku", "B-1")}
