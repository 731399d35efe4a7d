{#- The combination of `columns` is unique (NULLs compare equal, as in a GROUP BY), and none of the
    `not_null` columns is NULL: a model's key and its required columns in one pass over the model,
    one test where dbt's unique and not_null would be one each (every test is a node that a build
    runs on its own: dbt's per-node cost was a large part of the daily build, bench/analytics.py).
    Failing rows: each key that occurs more than once or has a NULL where none may be.

    `written_since` (an incremental model): the columns by which the model's incremental build
    selects what it rewrites (its rows with any of them within the trailing window,
    macros/build_window.sql). An incremental build tests only those rows: the build replaced every
    older row with a key among them (by its unique_key, or, for settlement lines, by rewriting
    their settlements whole), and left the others as the last build tested them. A full refresh
    tests every row. -#}
{% test unique_columns(model, columns, not_null=[], written_since=[]) %}
select {{ columns | join(', ') }}, count(*) as occurrences
from {{ model }}
{%- if written_since and not flags.FULL_REFRESH %}
where {% for column in written_since %}{{ column }} >= {{ window_start() }}{{ ' or ' if not loop.last }}{% endfor %}
{%- endif %}
group by {{ columns | join(', ') }}
having count(*) > 1
{%- for column in not_null %}
    or count({{ column }}) < count(*)
{%- endfor %}
{% endtest %}
