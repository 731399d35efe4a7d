{#- The build's date and its incremental window, from what the Dagster asset passes
    (illuma_pipelines/dbt_vars.py; defaults in dbt_project.yml):
    - as_of_date (YYYY-MM-DD): the day the build stands on (what is overdue, what is current):
      the environment variable ILLUMA_AS_OF_DATE, else the var. It is read only when models run,
      never while dbt parses (`execute` is false then), so a new day does not make dbt parse the
      project anew (a var would: any change of --vars does);
    - trailing_days: how far back an incremental build recomputes. Settlements close up to 14 days
      after their period and refunds come later still; the default 62 days (two months) lets a late
      settlement or refund correct the month before the last. A line that landed within the window
      (partition_date) also has its day and month recomputed however old its posting: a late
      settlement corrects the months it covers. Other older changes (a catalog cost corrected
      after the fact, an order line edited long ago) need --full-refresh. -#}
{% macro as_of_date() -%}
    {%- set value = (env_var('ILLUMA_AS_OF_DATE', '') if execute else '') or (var('as_of_date') | string) -%}
    {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', value) -%}
        {{ exceptions.raise_compiler_error("invalid as_of_date var (want YYYY-MM-DD): " ~ value) }}
    {%- endif -%}
    {{ return(modules.datetime.date.fromisoformat(value)) }}
{%- endmacro %}

{% macro as_of() -%}
    cast('{{ as_of_date().isoformat() }}' as date)
{%- endmacro %}

{% macro trailing_days() -%}
    {%- set days = var('trailing_days') | int -%}
    {%- if days < 1 -%}
        {{ exceptions.raise_compiler_error("trailing_days var must be a positive number of days: " ~ var('trailing_days')) }}
    {%- endif -%}
    {{ return(days) }}
{%- endmacro %}

{#- The first day an incremental build recomputes (a SQL date literal); with `month`, the first
    day of that day's month, so monthly rows are always recomputed whole. -#}
{% macro window_start(month=false) -%}
    {%- set start = as_of_date() - modules.datetime.timedelta(days=trailing_days()) -%}
    {%- if month -%}{%- set start = start.replace(day=1) -%}{%- endif -%}
    cast('{{ start.isoformat() }}' as date)
{%- endmacro %}

{#- The days or months (accrual_date, accrual_month or cash_month) of the settlement lines that
    landed within the window. A model that calls it declares `-- depends_on:` the two staging
    models (the reference sits in an is_incremental() block, unseen when dbt parses). -#}
{% macro landed(key) -%}
    {%- set exprs = {
        'accrual_date': 'coalesce(landed_l.posted_date, landed_s.deposit_date)',
        'accrual_month': month_start('coalesce(landed_l.posted_date, landed_s.deposit_date)'),
        'cash_month': month_start('landed_s.deposit_date'),
    } -%}
    select distinct {{ exprs[key] }}
    from {{ ref('stg_settlement_lines') }} as landed_l
    left join {{ ref('stg_settlements') }} as landed_s
        on landed_s.channel = landed_l.channel and landed_s.settlement_id = landed_l.settlement_id
    where landed_l.partition_date >= {{ window_start() }}
{%- endmacro %}

{#- Whether a daily row (its accrual day `day_column`) is in the window. -#}
{% macro day_in_window(day_column) -%}
    ({{ day_column }} >= {{ window_start() }} or {{ day_column }} in ({{ landed('accrual_date') }}))
{%- endmacro %}

{#- Whether a monthly row (`basis`, `month_column`) is in the window. -#}
{% macro month_in_window(basis_column, month_column) -%}
    ({{ month_column }} >= {{ window_start(month=true) }}
     or ({{ basis_column }} = 'accrual' and {{ month_column }} in ({{ landed('accrual_month') }}))
     or ({{ basis_column }} = 'cash' and {{ month_column }} in ({{ landed('cash_month') }})))
{%- endmacro %}

{#- The settlements a build of settlement lines rewrites (a select of channel, settlement_id from
    `relation`, a table of settlement lines): every settlement with a line posted or landed
    (partition_date) within the window. A settlement is rewritten whole: a line landed again
    replaces its earlier copy however old its posting, without joining every line of the model to
    the new ones by key (bench/analytics.py: that join was most of the daily build of the two
    settlement-line models). -#}
{% macro window_settlements(relation) -%}
    select distinct channel, settlement_id
    from {{ relation }}
    where partition_date >= {{ window_start() }} or posted_date >= {{ window_start() }}
{%- endmacro %}

{#- Whether the settlement line aliased `alias` belongs to a settlement of window_settlements. -#}
{% macro in_window_settlements(alias, relation) -%}
    exists (
        select 1 from ({{ window_settlements(relation) }}) as window_settlement
        where window_settlement.channel = {{ alias }}.channel
            and window_settlement.settlement_id = {{ alias }}.settlement_id
    )
{%- endmacro %}

{#- Pre-hook of an incremental model of settlement lines (append): delete its lines of the
    settlements the build rewrites from `relation` (window_settlements), and its own lines of the
    window, so a line that disappeared from the source disappears here too. Every line the build
    then inserts belongs to a settlement deleted here, so none can be there twice. -#}
{% macro delete_window_settlements(relation) -%}
    {%- if is_incremental() -%}
        delete from {{ this }} as target
        where target.partition_date >= {{ window_start() }} or target.posted_date >= {{ window_start() }}
            or {{ in_window_settlements('target', relation) }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}

{#- Pre-hook of an incremental model: delete the rows of the window before they are rebuilt, so a
    row that disappeared from the source within the window disappears here too. -#}
{% macro delete_window(condition) -%}
    {%- if is_incremental() -%}
        delete from {{ this }} where {{ condition }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}

{#- The UTC calendar day (or month) of a timestamp with time zone, on either engine. -#}
{% macro utc_date(ts) -%}
    cast(({{ ts }}) at time zone 'UTC' as date)
{%- endmacro %}

{% macro month_start(day) -%}
    cast(date_trunc('month', cast({{ day }} as timestamp)) as date)
{%- endmacro %}

{#- Days after shipment within which a channel usually settles an order: Amazon 14, eBay 7,
    Walmart 14; the var `settlement_delay_days` ({"amazon": 10, ...}) overrides any of them. -#}
{% macro settlement_delay_days(channel_column) -%}
    {%- set delays = {'amazon': 14, 'ebay': 7, 'walmart': 14} -%}
    {%- set overrides = var('settlement_delay_days') or {} -%}
    {%- if overrides is string -%}{%- set overrides = fromjson(overrides) -%}{%- endif -%}
    {%- for channel, days in overrides.items() -%}
        {%- if channel not in delays or (days | int) < 0 -%}
            {{ exceptions.raise_compiler_error("invalid settlement_delay_days override: " ~ channel ~ "=" ~ days) }}
        {%- endif -%}
        {%- do delays.update({channel: days | int}) -%}
    {%- endfor -%}
    case {{ channel_column }}
    {%- for channel, days in delays.items() %}
        when '{{ channel }}' then {{ days }}
    {%- endfor %}
    end
{%- endmacro %}
