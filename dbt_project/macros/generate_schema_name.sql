{#- Every model lands in the merchant's own schema, m_<merchant_id>; the id is validated by the
    platform before it reaches dbt, and checked again here. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- set merchant_id = var('merchant_id') -%}
    {%- if not modules.re.fullmatch('[a-z][a-z0-9_]{1,39}', merchant_id) -%}
        {{ exceptions.raise_compiler_error("invalid merchant_id var: " ~ merchant_id) }}
    {%- endif -%}
    m_{{ merchant_id }}
{%- endmacro %}
