//! The statements, each one round trip and one statement (autocommit): no session state,
//! no named prepared statements, so they run unchanged through a transaction-mode pooler.
//! Every expiry is compared with the database's `clock_timestamp()`, read once per
//! statement (`n`).
//!
//! Every write to a lock key goes through its row (an `INSERT … ON CONFLICT DO UPDATE` or
//! an `UPDATE`), so writes to one key are ordered by the row lock and each re-checks its
//! condition on the row's latest version: an abort and a late acquire of the same key
//! cannot both miss each other.

use super::url::Place;

/// `public.leasehold_locks` in `schema.sql`, in the order the names are replaced (the
/// longer names first).
const DEFAULT_NAMES: [(&str, &str); 3] = [
    ("public.leasehold_locks_fences", "_fences"),
    ("public.leasehold_locks_version", "_version"),
    ("public.leasehold_locks", ""),
];

/// The documented schema, as shipped (`public.leasehold_locks`).
pub(crate) const SCHEMA_SQL: &str = include_str!("schema.sql");

/// The version of the schema this client writes and reads.
pub(crate) const SCHEMA_VERSION: i32 = 1;

/// `schema.sql` for `place`: the same text with its names in place of the defaults.
pub(crate) fn schema_sql(place: &Place) -> String {
    let mut sql = SCHEMA_SQL.replace(
        "CREATE SCHEMA IF NOT EXISTS public;",
        &format!("CREATE SCHEMA IF NOT EXISTS \"{}\";", place.schema),
    );
    for (default, suffix) in DEFAULT_NAMES {
        sql = sql.replace(default, &table(place, suffix));
    }
    sql
}

/// `"schema"."table<suffix>"` (names are validated identifiers).
fn table(place: &Place, suffix: &str) -> String {
    format!("\"{}\".\"{}{suffix}\"", place.schema, place.table)
}

/// The statements of one table.
pub(crate) struct Statements {
    pub(crate) acquire: String,
    pub(crate) refresh: String,
    pub(crate) release: String,
    pub(crate) abort: String,
    pub(crate) ttl: String,
    pub(crate) force_release: String,
    pub(crate) inspect: String,
    pub(crate) list: String,
    pub(crate) fenced: String,
    pub(crate) version: String,
}

/// The payload of a release notification (at most 8000 bytes): the key in hex, or for a
/// longer key `md5:` and its MD5 in hex (no hex key contains `:`).
const PAYLOAD: &str =
    "CASE WHEN octet_length(r.key) <= 3900 THEN encode(r.key, 'hex') ELSE 'md5:' || md5(r.key) END";

/// Milliseconds left until `expires_at`, rounded down.
const REMAINING: &str = "GREATEST(0, floor(extract(epoch FROM l.expires_at - n.t) * 1000))::int8";

/// A row's columns set free (the row stays: its token is the next one's floor).
const FREE: &str = "value = NULL, expires_at = NULL, creator = NULL, armed = NULL, \
                    label = NULL, locked_at = NULL";

impl Statements {
    pub(crate) fn new(place: &Place) -> Self {
        let locks = table(place, "");
        let fences = table(place, "_fences");
        let version = table(place, "_version");
        Statements {
            // $1 key, $2 value, $3 expiration ms, $4 attempt id, $5 client (hex), $6 attempt
            // number, $7 label ('': none).
            // Returns the token when the key now holds the value; else whether the
            // attempt was refused and how long the holder has left, as of the
            // statement's snapshot (both answers mean: nothing done).
            acquire: format!(
                "WITH n AS MATERIALIZED (SELECT clock_timestamp() AS t), \
                 up AS ( \
                   INSERT INTO {locks} AS l \
                     (key, value, expires_at, token, creator, armed, label, locked_at) \
                   SELECT $1, $2, n.t + $3 * interval '1 millisecond', \
                     (extract(epoch FROM n.t) * 1000000)::int8, $4, $4, NULLIF($7, ''), \
                     CASE WHEN $7 = '' THEN NULL ELSE n.t END \
                   FROM n \
                   ON CONFLICT (key) DO UPDATE SET \
                     value = excluded.value, \
                     expires_at = excluded.expires_at, \
                     token = CASE WHEN l.value = excluded.value AND l.expires_at > (SELECT t FROM n) \
                       THEN l.token ELSE l.token + 1 END, \
                     creator = CASE WHEN l.value = excluded.value AND l.expires_at > (SELECT t FROM n) \
                       THEN l.creator ELSE excluded.creator END, \
                     armed = excluded.armed, \
                     label = CASE WHEN l.value = excluded.value AND l.expires_at > (SELECT t FROM n) \
                       THEN l.label ELSE excluded.label END, \
                     locked_at = CASE WHEN l.value = excluded.value AND l.expires_at > (SELECT t FROM n) \
                       THEN l.locked_at ELSE excluded.locked_at END \
                   WHERE NOT COALESCE( \
                       (l.aborted -> $5 ->> 0)::int8 >= $6 \
                       AND (l.aborted -> $5 ->> 1)::float8 > extract(epoch FROM (SELECT t FROM n)), \
                       false) \
                     AND (l.value IS NULL OR l.expires_at <= (SELECT t FROM n) \
                          OR l.value = excluded.value) \
                   RETURNING l.token \
                 ) \
                 SELECT (SELECT token FROM up), \
                   COALESCE((SELECT (l.aborted -> $5 ->> 0)::int8 >= $6 FROM {locks} l WHERE l.key = $1), false), \
                   (SELECT {REMAINING} FROM {locks} l, n \
                    WHERE l.key = $1 AND l.value IS NOT NULL AND l.value <> $2 AND l.expires_at > n.t)"
            ),
            // $1 key, $2 value, $3 expiration ms. One row: refreshed.
            refresh: format!(
                "WITH n AS MATERIALIZED (SELECT clock_timestamp() AS t) \
                 UPDATE {locks} l SET expires_at = n.t + $3 * interval '1 millisecond' FROM n \
                 WHERE l.key = $1 AND l.value = $2 AND l.expires_at > n.t RETURNING 1"
            ),
            // $1 key, $2 value, $3 channel ('': no notification). One row: released.
            release: format!(
                "WITH n AS MATERIALIZED (SELECT clock_timestamp() AS t), \
                 r AS (UPDATE {locks} l SET {FREE} FROM n \
                       WHERE l.key = $1 AND l.value = $2 AND l.expires_at > n.t RETURNING l.key) \
                 SELECT 1 FROM r LEFT JOIN LATERAL \
                   (SELECT pg_notify($3, {PAYLOAD}) WHERE $3 <> '') x ON true"
            ),
            // $1 key, $2 value, $3 client (hex), $4 highest attempt number aborted (0: keep
            // no record), $5 the attempt ids whose lock to undo ({}: none), $6 channel, $7
            // how long the record is kept, s. One row: whether the key was deleted.
            abort: format!(
                "WITH n AS MATERIALIZED (SELECT clock_timestamp() AS t, \
                   extract(epoch FROM clock_timestamp())::float8 AS e), \
                 r AS ( \
                   INSERT INTO {locks} AS l (key, token, aborted) \
                   SELECT $1, (n.e * 1000000)::int8, \
                     CASE WHEN $4 > 0 THEN jsonb_build_object($3, jsonb_build_array($4, n.e + $7)) \
                       ELSE '{{}}'::jsonb END \
                   FROM n \
                   ON CONFLICT (key) DO UPDATE SET \
                     aborted = (SELECT COALESCE(jsonb_object_agg(a.k, a.v), '{{}}'::jsonb) \
                         FROM jsonb_each(l.aborted) a(k, v), n \
                         WHERE (a.v ->> 1)::float8 > n.e AND ($4 = 0 OR a.k <> $3)) \
                       || CASE WHEN $4 > 0 THEN jsonb_build_object($3, jsonb_build_array( \
                            GREATEST($4, COALESCE((SELECT CASE WHEN (l.aborted -> $3 ->> 1)::float8 > n.e \
                              THEN (l.aborted -> $3 ->> 0)::int8 END FROM n), 0)), \
                            (SELECT n.e FROM n) + $7)) \
                          ELSE '{{}}'::jsonb END, \
                     value = CASE WHEN l.value = $2 AND l.expires_at > (SELECT t FROM n) \
                       AND l.creator = ANY($5) AND l.armed = ANY($5) THEN NULL ELSE l.value END, \
                     expires_at = CASE WHEN l.value = $2 AND l.expires_at > (SELECT t FROM n) \
                       AND l.creator = ANY($5) AND l.armed = ANY($5) THEN NULL ELSE l.expires_at END \
                   RETURNING l.key, (l.value IS NULL AND l.creator = ANY($5) AND l.armed = ANY($5)) AS deleted \
                 ) \
                 SELECT r.deleted FROM r LEFT JOIN LATERAL \
                   (SELECT pg_notify($6, {PAYLOAD}) WHERE r.deleted AND $6 <> '') x ON true"
            ),
            // $1 key, $2 value. One row: the milliseconds left.
            ttl: format!(
                "WITH n AS MATERIALIZED (SELECT clock_timestamp() AS t) \
                 SELECT {REMAINING} FROM {locks} l, n \
                 WHERE l.key = $1 AND l.value = $2 AND l.expires_at > n.t"
            ),
            // $1 key, $2 token (NULL: any), $3 channel. One row: released.
            force_release: format!(
                "WITH n AS MATERIALIZED (SELECT clock_timestamp() AS t), \
                 r AS (UPDATE {locks} l SET {FREE} FROM n \
                       WHERE l.key = $1 AND l.value IS NOT NULL AND l.expires_at > n.t \
                         AND ($2::int8 IS NULL OR l.token = $2) RETURNING l.key) \
                 SELECT 1 FROM r LEFT JOIN LATERAL \
                   (SELECT pg_notify($3, {PAYLOAD}) WHERE $3 <> '') x ON true"
            ),
            // $1 key.
            inspect: format!(
                "WITH n AS MATERIALIZED (SELECT clock_timestamp() AS t) \
                 SELECT l.key, {REMAINING}, l.token, md5(l.value), l.label, \
                   (extract(epoch FROM l.locked_at) * 1000)::float8 \
                 FROM {locks} l, n \
                 WHERE l.key = $1 AND l.value IS NOT NULL AND l.expires_at > n.t"
            ),
            // $1 lowest key, $2 first key past the prefix (NULL: none), $3 page size.
            list: format!(
                "WITH n AS MATERIALIZED (SELECT clock_timestamp() AS t) \
                 SELECT l.key, {REMAINING}, l.token, md5(l.value), l.label, \
                   (extract(epoch FROM l.locked_at) * 1000)::float8 \
                 FROM {locks} l, n \
                 WHERE l.key >= $1 AND ($2::bytea IS NULL OR l.key < $2) \
                   AND l.value IS NOT NULL AND l.expires_at > n.t \
                 ORDER BY l.key LIMIT $3"
            ),
            // $1 resource, $2 token, $3 holder (NULL: anonymous), $4 write, $5 value.
            // Returns the highest token after the access, whether its holder is this
            // one, and the value.
            fenced: format!(
                "INSERT INTO {fences} AS f (resource, highest, holder, value) \
                 VALUES ($1, $2, $3, CASE WHEN $4 THEN $5 END) \
                 ON CONFLICT (resource) DO UPDATE SET \
                   highest = CASE WHEN excluded.highest > f.highest THEN excluded.highest \
                     ELSE f.highest END, \
                   holder = CASE WHEN excluded.highest > f.highest THEN excluded.holder \
                     ELSE f.holder END, \
                   value = CASE WHEN $4 AND (excluded.highest > f.highest OR \
                       (excluded.highest = f.highest AND f.holder IS NOT DISTINCT FROM excluded.holder)) \
                     THEN excluded.value ELSE f.value END \
                 RETURNING f.highest, f.holder IS NOT DISTINCT FROM $3, f.value"
            ),
            version: format!("SELECT max(version) FROM {version}"),
        }
    }
}
