{#- The combination of `columns` is unique (NULLs compare equal, as in a GROUP BY). -#}
{% test unique_columns(model, columns) %}
select {{ columns | join(', ') }}, count(*) as occurrences
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
