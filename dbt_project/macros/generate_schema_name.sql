{#- Every model lands in the merchant's own schema: m_<merchant_id> on PostgreSQL; on DuckDB the
    `main` schema of the merchant's own file, whose catalog is m_<merchant_id> (ADR 0001). The id
    is validated by the platform before it reaches dbt, and checked again here. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ merchant_schema() }}
{%- endmacro %}

{% macro merchant_schema() -%}
    {%- set merchant_id = var('merchant_id') -%}
    {%- if not modules.re.fullmatch('[a-z][a-z0-9_]{1,39}', merchant_id) -%}
        {{ exceptions.raise_compiler_error("invalid merchant_id var: " ~ merchant_id) }}
    {%- endif -%}
    {%- if target.type == 'duckdb' -%} main {%- else -%} m_{{ merchant_id }} {%- endif -%}
{%- endmacro %}
