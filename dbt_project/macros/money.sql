{#- The fee-category groups of illuma_pipelines/settlements/vocab.py, in the one place the models
    read them (dbt cannot import Python). tests/test_analytics_models.py compares them, through the
    `fee_categories` model, with vocab.py's REVENUE/TAX/FEE_ONLY/BRIDGE_CATEGORIES. -#}
{% macro category_groups() -%}
    {{ return({
        'revenue': ['principal', 'shipping_charged', 'promotion', 'reimbursement'],
        'tax': ['tax_collected', 'marketplace_withheld_tax'],
        'fee': ['commission', 'fulfillment', 'shipping_label', 'storage', 'advertising',
                'subscription', 'refund_administration', 'chargeback', 'other'],
        'bridge': ['reserve_held', 'reserve_released', 'transfer'],
    }) }}
{%- endmacro %}

{#- `column in (...)` for one or more groups: in_groups('fee_category', ['revenue']). -#}
{% macro in_groups(column, groups) -%}
    {%- set names = [] -%}
    {%- for group in groups -%}{%- do names.extend(category_groups()[group]) -%}{%- endfor -%}
    {{ column }} in ({% for name in names %}'{{ name }}'{{ ", " if not loop.last }}{% endfor %})
{%- endmacro %}

{#- The group a category belongs to: revenue, tax, fee or bridge. -#}
{% macro category_group(column) -%}
    case
    {%- for group, names in category_groups().items() %}
        when {{ in_groups(column, [group]) }} then '{{ group }}'
    {%- endfor %}
    end
{%- endmacro %}

{#- The warehouse's money type (illuma_pipelines/warehouse.py: DECIMAL(18,4)). -#}
{% macro money(expr) -%}
    cast({{ expr }} as decimal(18, 4))
{%- endmacro %}

{#- round(num / den, 4), exactly and alike on both engines: DuckDB divides decimals in floating
    point, so the quotient is taken in integers (HUGEINT; NUMERIC on PostgreSQL), rounded half away
    from zero. `num_scale` is how many decimals `num` has (4 for money, 8 for money × money);
    `den` has at most 4 (a product of two amounts is widened by the caller before it can overflow
    DECIMAL(18)). NULL when `den` is 0. -#}
{% macro round_div(num, den, num_scale=4) -%}
    {%- set int_type = 'hugeint' if target.type == 'duckdb' else 'numeric' -%}
    {%- set n -%}(cast(cast(({{ num }}) as decimal(38, {{ num_scale }})) * {{ 10 ** num_scale }} as {{ int_type }}) * {{ 10 ** (8 - num_scale) }}){%- endset -%}
    {%- set d -%}cast(({{ den }}) * 10000 as {{ int_type }}){%- endset -%}
    case when {{ d }} = 0 then null else
        cast({{ int_div('abs(' ~ n ~ ') * 2 + abs(' ~ d ~ ')', '2 * abs(' ~ d ~ ')') }} * sign({{ n }}) * sign({{ d }}) as decimal(38, 0)) * 0.0001
    end
{%- endmacro %}

{% macro int_div(a, b) -%}
    {%- if target.type == 'duckdb' -%} (({{ a }}) // ({{ b }})) {%- else -%} div({{ a }}, {{ b }}) {%- endif -%}
{%- endmacro %}
