-- leasehold's PostgreSQL schema, version 1 (feature `postgres`).
--
-- The client creates it on first use unless told not to (`create=false` in the URL), with
-- its own schema and table name in place of `public.leasehold_locks` (and of the two
-- tables named after it); `leasehold migrate <url>` prints it for a URL, or applies it.
-- Statements are idempotent: running this file again changes nothing.
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
INSERT INTO public.leasehold_locks_version (version)
    SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM public.leasehold_locks_version);
