-- leasehold's PostgreSQL schema, version 2 (feature `postgres`).
--
-- The client creates it on first use unless told not to (`create=false` in the URL), with
-- its own schema and table name in place of `public.leasehold_locks` (and of the two
-- tables and the functions named after it); `leasehold migrate <url>` prints it for a
-- URL, or applies it. Statements are idempotent: running this file again changes nothing,
-- and running it on a version 1 schema migrates it to version 2 (version 2 adds the
-- functions; the tables are unchanged).
--
-- One row per lock key ever used, never deleted (a release only marks it free), so that
-- its fencing counter `token` rises for as long as the row exists. A row created by an
-- acquire starts at the database clock in microseconds, above any token an earlier,
-- deleted row of the key could have issued.
CREATE SCHEMA IF NOT EXISTS public;
CREATE TABLE IF NOT EXISTS public.leasehold_locks (
    key bytea PRIMARY KEY,
    -- The holder's value (its identity); NULL: free.
    value bytea,
    -- Expiry, on the database's clock (clock_timestamp()); the lock is held while it is
    -- in the future.
    expires_at timestamptz,
    -- The fencing token of the current (or last) incarnation.
    token bigint NOT NULL,
    -- The acquire attempt that created the incarnation, and the last that armed it
    -- ('<client hex>:<seq>'): what an abort may undo.
    creator text,
    armed text,
    -- The holder's label and when the incarnation was taken (with a label only).
    label text,
    locked_at timestamptz,
    -- Per client that aborted attempts on the key: [highest aborted attempt number,
    -- until (epoch seconds)]; every attempt of that client up to it is refused.
    aborted jsonb NOT NULL DEFAULT '{}'
);
-- Fenced resources: the highest token seen, the holder that used it, and the value.
CREATE TABLE IF NOT EXISTS public.leasehold_locks_fences (
    resource bytea PRIMARY KEY,
    highest bigint NOT NULL,
    holder bytea,
    value bytea
);
-- The version of this schema (one row), so that a later version can migrate it.
CREATE TABLE IF NOT EXISTS public.leasehold_locks_version (
    version integer NOT NULL
);

-- One function per operation, each running one statement. The client calls them (`SELECT *
-- FROM public.leasehold_locks_acquire($1, …)`, unnamed): the server plans only that call,
-- and PL/pgSQL keeps the plan of the statement inside per session, out of sight of the
-- client, so any pooled session runs them as well. Every expiry is compared with the
-- database's `clock_timestamp()`, read once per call (`t`, or `n` in a statement). Every
-- write to a lock key goes through its row (an `INSERT … ON CONFLICT DO UPDATE` or an
-- `UPDATE`), so writes to one key are ordered by the row lock and each re-checks its
-- condition on the row's latest version: an abort and a late acquire of the same key
-- cannot both miss each other.
-- A release notification's payload (at most 8000 bytes) is the key in hex, or for a
-- longer key `md5:` and its MD5 in hex (no hex key contains `:`).

-- $1 key, $2 value, $3 expiration ms, $4 attempt id, $5 client (hex), $6 attempt number,
-- $7 label ('': none). The token when the key now holds the value; else whether the
-- attempt was refused and how long the holder has left, in ms (both answers mean: nothing
-- done), read from the row the upsert found and left locked until the call commits.
CREATE OR REPLACE FUNCTION public.leasehold_locks_acquire(
    bytea, bytea, bigint, text, text, bigint, text,
    OUT token bigint, OUT refused boolean, OUT remaining bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  t timestamptz := clock_timestamp();
BEGIN
  INSERT INTO public.leasehold_locks AS l
    (key, value, expires_at, token, creator, armed, label, locked_at)
  VALUES ($1, $2, t + $3 * interval '1 millisecond',
    (extract(epoch FROM t) * 1000000)::int8, $4, $4, NULLIF($7, ''),
    CASE WHEN $7 = '' THEN NULL ELSE t END)
  ON CONFLICT (key) DO UPDATE SET
    value = excluded.value,
    expires_at = excluded.expires_at,
    token = CASE WHEN l.value = excluded.value AND l.expires_at > t
      THEN l.token ELSE l.token + 1 END,
    creator = CASE WHEN l.value = excluded.value AND l.expires_at > t
      THEN l.creator ELSE excluded.creator END,
    armed = excluded.armed,
    label = CASE WHEN l.value = excluded.value AND l.expires_at > t
      THEN l.label ELSE excluded.label END,
    locked_at = CASE WHEN l.value = excluded.value AND l.expires_at > t
      THEN l.locked_at ELSE excluded.locked_at END
  WHERE NOT COALESCE(
      (l.aborted -> $5 ->> 0)::int8 >= $6
      AND (l.aborted -> $5 ->> 1)::float8 > extract(epoch FROM t),
      false)
    AND (l.value IS NULL OR l.expires_at <= t OR l.value = excluded.value)
  RETURNING l.token INTO token;
  refused := false;
  IF FOUND THEN
    RETURN;
  END IF;
  -- Not taken: the key's row exists, and the upsert locked it.
  SELECT COALESCE((l.aborted -> $5 ->> 0)::int8 >= $6, false),
    CASE WHEN l.value IS NOT NULL AND l.value <> $2 AND l.expires_at > t
      THEN GREATEST(0, floor(extract(epoch FROM l.expires_at - t) * 1000))::int8 END
  INTO refused, remaining
  FROM public.leasehold_locks l WHERE l.key = $1;
  refused := COALESCE(refused, false);
END
$$;
-- $1 key, $2 value, $3 expiration ms. One row: refreshed.
CREATE OR REPLACE FUNCTION public.leasehold_locks_refresh(bytea, bytea, bigint)
RETURNS SETOF integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
WITH n AS MATERIALIZED (SELECT clock_timestamp() AS t),
r AS (UPDATE public.leasehold_locks l SET expires_at = n.t + $3 * interval '1 millisecond'
      FROM n WHERE l.key = $1 AND l.value = $2 AND l.expires_at > n.t RETURNING 1)
SELECT 1 FROM r;
END
$$;
-- $1 key, $2 value, $3 channel ('': no notification). Whether it was released (the row
-- stays, set free: its token is the next one's floor).
CREATE OR REPLACE FUNCTION public.leasehold_locks_release(bytea, bytea, text)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  t timestamptz := clock_timestamp();
  k bytea;
BEGIN
  UPDATE public.leasehold_locks l SET value = NULL, expires_at = NULL, creator = NULL,
    armed = NULL, label = NULL, locked_at = NULL
  WHERE l.key = $1 AND l.value = $2 AND l.expires_at > t
  RETURNING l.key INTO k;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  IF $3 <> '' THEN
    PERFORM pg_notify($3, CASE WHEN octet_length(k) <= 3900 THEN encode(k, 'hex')
                          ELSE 'md5:' || md5(k) END);
  END IF;
  RETURN true;
END
$$;
-- $1 key, $2 value, $3 client (hex), $4 highest attempt number aborted (0: keep no
-- record), $5 the attempt ids whose lock to undo ({}: none), $6 channel, $7 how long the
-- record is kept, s. One row: whether the key was deleted.
CREATE OR REPLACE FUNCTION public.leasehold_locks_abort(
    bytea, bytea, text, bigint, text[], text, double precision)
RETURNS SETOF boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
WITH n AS MATERIALIZED (SELECT clock_timestamp() AS t,
  extract(epoch FROM clock_timestamp())::float8 AS e),
r AS (
  INSERT INTO public.leasehold_locks AS l (key, token, aborted)
  SELECT $1, (n.e * 1000000)::int8,
    CASE WHEN $4 > 0 THEN jsonb_build_object($3, jsonb_build_array($4, n.e + $7))
      ELSE '{}'::jsonb END
  FROM n
  ON CONFLICT (key) DO UPDATE SET
    aborted = (SELECT COALESCE(jsonb_object_agg(a.k, a.v), '{}'::jsonb)
        FROM jsonb_each(l.aborted) a(k, v), n
        WHERE (a.v ->> 1)::float8 > n.e AND ($4 = 0 OR a.k <> $3))
      || CASE WHEN $4 > 0 THEN jsonb_build_object($3, jsonb_build_array(
           GREATEST($4, COALESCE((SELECT CASE WHEN (l.aborted -> $3 ->> 1)::float8 > n.e
             THEN (l.aborted -> $3 ->> 0)::int8 END FROM n), 0)),
           (SELECT n.e FROM n) + $7))
         ELSE '{}'::jsonb END,
    value = CASE WHEN l.value = $2 AND l.expires_at > (SELECT t FROM n)
      AND l.creator = ANY($5) AND l.armed = ANY($5) THEN NULL ELSE l.value END,
    expires_at = CASE WHEN l.value = $2 AND l.expires_at > (SELECT t FROM n)
      AND l.creator = ANY($5) AND l.armed = ANY($5) THEN NULL ELSE l.expires_at END
  RETURNING l.key, (l.value IS NULL AND l.creator = ANY($5) AND l.armed = ANY($5)) AS deleted
)
SELECT r.deleted FROM r LEFT JOIN LATERAL
  (SELECT pg_notify($6, CASE WHEN octet_length(r.key) <= 3900 THEN encode(r.key, 'hex')
                        ELSE 'md5:' || md5(r.key) END)
   WHERE r.deleted AND $6 <> '') x ON true;
END
$$;
-- $1 key, $2 value. One row: the milliseconds left, rounded down.
CREATE OR REPLACE FUNCTION public.leasehold_locks_ttl(bytea, bytea)
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
WITH n AS MATERIALIZED (SELECT clock_timestamp() AS t)
SELECT GREATEST(0, floor(extract(epoch FROM l.expires_at - n.t) * 1000))::int8
FROM public.leasehold_locks l, n
WHERE l.key = $1 AND l.value = $2 AND l.expires_at > n.t;
END
$$;
-- $1 key, $2 token (NULL: any), $3 channel. One row: released.
CREATE OR REPLACE FUNCTION public.leasehold_locks_force(bytea, bigint, text)
RETURNS SETOF integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
WITH n AS MATERIALIZED (SELECT clock_timestamp() AS t),
r AS (UPDATE public.leasehold_locks l SET value = NULL, expires_at = NULL, creator = NULL,
        armed = NULL, label = NULL, locked_at = NULL
      FROM n WHERE l.key = $1 AND l.value IS NOT NULL AND l.expires_at > n.t
        AND ($2 IS NULL OR l.token = $2) RETURNING l.key)
SELECT 1 FROM r LEFT JOIN LATERAL
  (SELECT pg_notify($3, CASE WHEN octet_length(r.key) <= 3900 THEN encode(r.key, 'hex')
                        ELSE 'md5:' || md5(r.key) END) WHERE $3 <> '') x ON true;
END
$$;
-- $1 key. The lock: key, ms left, token, MD5 of the value (hex), label, taken at (epoch
-- ms).
CREATE OR REPLACE FUNCTION public.leasehold_locks_inspect(bytea)
RETURNS TABLE (key bytea, remaining bigint, token bigint, holder text, label text,
               locked_at double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
WITH n AS MATERIALIZED (SELECT clock_timestamp() AS t)
SELECT l.key, GREATEST(0, floor(extract(epoch FROM l.expires_at - n.t) * 1000))::int8,
  l.token, md5(l.value), l.label, (extract(epoch FROM l.locked_at) * 1000)::float8
FROM public.leasehold_locks l, n
WHERE l.key = $1 AND l.value IS NOT NULL AND l.expires_at > n.t;
END
$$;
-- $1 lowest key, $2 first key past the prefix (NULL: none), $3 page size. The locks, as
-- inspect's, in key order.
CREATE OR REPLACE FUNCTION public.leasehold_locks_list(bytea, bytea, bigint)
RETURNS TABLE (key bytea, remaining bigint, token bigint, holder text, label text,
               locked_at double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
WITH n AS MATERIALIZED (SELECT clock_timestamp() AS t)
SELECT l.key, GREATEST(0, floor(extract(epoch FROM l.expires_at - n.t) * 1000))::int8,
  l.token, md5(l.value), l.label, (extract(epoch FROM l.locked_at) * 1000)::float8
FROM public.leasehold_locks l, n
WHERE l.key >= $1 AND ($2 IS NULL OR l.key < $2)
  AND l.value IS NOT NULL AND l.expires_at > n.t
ORDER BY l.key LIMIT $3;
END
$$;
-- $1 resource, $2 token, $3 holder (NULL: anonymous), $4 write, $5 value. The highest
-- token after the access, whether its holder is this one, and the value.
CREATE OR REPLACE FUNCTION public.leasehold_locks_fenced(bytea, bigint, bytea, boolean, bytea)
RETURNS TABLE (highest bigint, same_holder boolean, value bytea)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
WITH w AS (
  INSERT INTO public.leasehold_locks_fences AS f (resource, highest, holder, value)
  VALUES ($1, $2, $3, CASE WHEN $4 THEN $5 END)
  ON CONFLICT (resource) DO UPDATE SET
    highest = CASE WHEN excluded.highest > f.highest THEN excluded.highest
      ELSE f.highest END,
    holder = CASE WHEN excluded.highest > f.highest THEN excluded.holder
      ELSE f.holder END,
    value = CASE WHEN $4 AND (excluded.highest > f.highest OR
        (excluded.highest = f.highest AND f.holder IS NOT DISTINCT FROM excluded.holder))
      THEN excluded.value ELSE f.value END
  RETURNING f.highest, f.holder IS NOT DISTINCT FROM $3, f.value
)
SELECT * FROM w;
END
$$;
-- Version 2; a version 1 schema (the same tables, no functions) is now version 2.
INSERT INTO public.leasehold_locks_version (version)
    SELECT 2 WHERE NOT EXISTS (SELECT 1 FROM public.leasehold_locks_version);
UPDATE public.leasehold_locks_version SET version = 2 WHERE version < 2;
