{#- An order that has left the warehouse (illuma_pipelines/normalize/vocab.py OrderStatus):
    partially shipped, shipped, delivered or returned; refunded ones only if a shipment date says
    they shipped (a refund can also cancel an order before shipment). -#}
{% macro is_shipped(status, shipped_at) -%}
    ({{ status }} in ('partially_shipped', 'shipped', 'delivered', 'returned')
     or ({{ status }} in ('refunded', 'partially_refunded') and {{ shipped_at }} is not null))
{%- endmacro %}
