"""The guard in front of run_sql, on its own: what a hostile or careless model might send, refused with the
reason before anything reaches Postgres; what a revenue question needs, allowed and printed back as checked."""

from __future__ import annotations

import pytest

from projections.read.sql_guard import MAX_SQL_CHARS, SqlRefusedError, check_select

ALLOWED = [
    "select day, sum(net) from analytics.daily_revenue where livemode and day >= '2026-01-01' group by day order by 1",
    "with m as (select * from analytics.mrr_by_month) select month, round(mrr) from m where currency = 'eur'",
    "with a as (select 1 as x), b as (select x from a) select * from b",
    "select now() - interval '30 days', date '2026-01-01', current_date, extract(epoch from now())",
    "select day from analytics.daily_revenue group by rollup (day)",
    "select extract(year from day), date_trunc('month', day)::date, coalesce(net, 0), greatest(1, 2), nullif(net, 0) "
    "from analytics.daily_revenue",
    "select a.month from analytics.mrr_by_month a join analytics.mrr_movements b using (month, currency) "
    "where a.month in (select month from analytics.subscriber_churn)",
    "select customer_id, rank() over (order by net desc) from analytics.customer_revenue limit 5",
    "select count(*) filter (where movement = 'churn') from analytics.mrr_changes",
]
REFUSED = [
    ("", "empty query"),
    ("select 1; select 2", "one statement only"),
    ("drop view analytics.daily_revenue", "only SELECT is allowed; this is DROP"),
    ("insert into analytics.daily_revenue values (1)", "only SELECT is allowed; this is INSERT"),
    ("set role revenue_reader_full", "only SELECT is allowed"),
    ("copy (select 1) to '/tmp/x'", "only SELECT is allowed"),
    ("explain analyze select 1", "only SELECT is allowed"),
    ("with d as (delete from analytics.daily_revenue returning *) select * from d", "DELETE"),
    ("with u as (update analytics.daily_revenue set net = 0 returning *) select * from u", "UPDATE"),
    ("select * into scratch from analytics.charges", "SELECT INTO"),
    ("select * from analytics.charges for update", "FOR UPDATE/SHARE"),
    ("select * from analytics.charges where charge_id = $1", "parameters"),
    ("select pg_sleep(10)", "function pg_sleep() is not allowed"),
    ("select pg_catalog.pg_sleep(10)", "function pg_catalog.pg_sleep() is not allowed"),
    ("select set_config('app.tenant_id', 'ten_other', false)", "function set_config() is not allowed"),
    ("select current_setting('app.tenant_sig')", "function current_setting() is not allowed"),
    ("select pg_read_file('/etc/passwd')", "function pg_read_file() is not allowed"),
    ("select * from generate_series(1, 1000000000)", "function generate_series() is not allowed"),
    ("select analytics.current_tenant()", "function analytics.current_tenant() is not allowed"),
    ("select max(x) from (select lo_import('/etc/passwd') as x) s", "function lo_import() is not allowed"),
    ("select * from projection.charges", "projection.charges is not one"),
    ("select * from pg_catalog.pg_authid", "pg_catalog.pg_authid is not one"),
    ("select * from charges", "charges is not one"),
    ("select * from otherdb.analytics.daily_revenue", "otherdb.analytics.daily_revenue is not one"),
    # A CTE's name counts only where it is defined: outside, `charges` would resolve through the search path.
    ("select * from (with charges as (select 1) select * from charges) a, charges", "charges is not one"),
    ("select 'pg_authid'::regclass", "casts to regclass"),
    # From a hostile review: each of these passed the first version of the guard.
    ("with pg_settings as (select name, setting from pg_settings) select * from pg_settings", "pg_ names are the catalogs'"),
    ("with x as (select * from pg_stat_activity), pg_stat_activity as (select 1) select * from x",
     "pg_stat_activity is not one"),  # a CTE is not visible to the CTEs before it
    ("with recursive r(s) as (select 'x' union all select s || s from r) select max(length(s)) from r", "WITH RECURSIVE"),
    ("select format('%500000000s', '')", "function format() is not allowed"),  # a 500 MB value from 30 characters
    ("select replace('aaaa', 'a', 'bbbb')", "function replace() is not allowed"),
    ("select string_agg('x', '') from (values (1), (2)) a, (values (1), (2)) b", "function string_agg() is not allowed"),
    ("select ''::char(10485760)", "type modifiers"),
    ("select current_user", "not the role's name"),
    ("select xmlelement(name a)", "XmlExpr"),
    ("select json_value(jsonb '\"pg_authid\"', '$' returning regclass)", "not allowed in a read-only query"),
    ("select " + "+".join(["1"] * 400), "nested too deeply"),
    ("select 'pg_sleep'::regproc", "casts to regproc"),
    ("selec * from analytics.daily_revenue", "not valid PostgreSQL"),
    ("select 1 " + " " * MAX_SQL_CHARS, "longer than"),
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_revenue_questions_pass_and_run_as_printed_back(sql: str) -> None:
    checked = check_select(sql)
    assert checked.sql.startswith(("SELECT", "WITH")) and check_select(checked.sql).sql == checked.sql


@pytest.mark.parametrize("sql, reason", REFUSED, ids=[r[1][:40] for r in REFUSED])
def test_each_guard_refuses_with_its_reason(sql: str, reason: str) -> None:
    with pytest.raises(SqlRefusedError) as refused:
        check_select(sql)
    assert reason in str(refused.value)


def test_the_logged_form_carries_no_literals() -> None:
    checked = check_select("select * from analytics.charges where customer_id = 'cus_SECRET' and amount > 4242")
    assert "cus_SECRET" not in checked.normalized and "4242" not in checked.normalized
    assert checked.fingerprint == check_select("select * from analytics.charges where customer_id = 'x' "
                                               "and amount > 1").fingerprint
