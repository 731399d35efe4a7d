-- The fee-category vocabulary the models use (macros/money.sql, from
-- illuma_pipelines/settlements/vocab.py): each category and its group (revenue, tax, fee or
-- bridge). Only the bridge group moves money between settlements without being proceeds.
{% for group, names in category_groups().items() %}
{%- for name in names %}
select cast('{{ name }}' as {{ dbt.type_string() }}) as fee_category, cast('{{ group }}' as {{ dbt.type_string() }}) as category_group
{%- if not loop.last %} union all{% endif %}
{%- endfor %}
{%- if not loop.last %}
union all
{%- endif %}
{% endfor %}
