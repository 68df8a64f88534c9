-- Physical tables of one generation ({generation}). Analysts read the views of views.sql.
--
-- Exactly-once in effect: the projector writes each batch of one topic as ONE insert into
-- its writes table, whose fence (end of this file) admits the rows of the partitions' current
-- owner into the topic's intake table, whose views fan the rows out to the ledgers
-- (sales_calls_g / refunds_calls_g / clicks_g / dead_letters_g); everything else is derived
-- from the ledgers by materialized views. A single-block insert is atomic, and every
-- ledger row carries its Kafka position (with its log epoch and record fingerprint);
-- log_positions_g (fed by the same inserts) holds the next offset to write per partition and
-- epoch, and the projector skips or rewinds against it before every write. So a batch is applied once even if the process dies between the write and the
-- offset commit. Insert deduplication tokens plus deduplicate_blocks_in_dependent_materialized_views
-- make an in-process retry of the same block a no-op in every table it reaches, which is why
-- every table below sets non_replicated_deduplication_window.

-- Every call, with the projector's decision: counted, duplicate or rejected.
CREATE TABLE IF NOT EXISTS {database}.sales_calls_g{generation}
(
    universe          LowCardinality(String),
    transaction_id    String,
    event_id          String,
    source            LowCardinality(String),
    status            LowCardinality(String),
    reason            LowCardinality(String),
    amount_raw        String,
    amount            Decimal(18, 4),
    currency          LowCardinality(String),
    customer_id       String,
    campaign_id       String,
    link_id           String,
    product           LowCardinality(String),
    clicked_at        Nullable(DateTime64(3, 'UTC')),
    received_at       DateTime64(3, 'UTC'),
    client_hash       String,
    kafka_topic       LowCardinality(String),
    kafka_partition   UInt32,
    kafka_offset      UInt64,
    log_epoch         UInt32 DEFAULT 0,
    kafka_fingerprint UInt64 DEFAULT 0
)
ENGINE = MergeTree
ORDER BY (universe, received_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {database}.clicks_g{generation}
(
    universe          LowCardinality(String),
    customer_id       String,
    campaign_id       String,
    link_id           String,
    product           LowCardinality(String),
    clicked_at        DateTime64(3, 'UTC'),
    event_id          String,
    client_hash       String,
    kafka_topic       LowCardinality(String),
    kafka_partition   UInt32,
    kafka_offset      UInt64,
    log_epoch         UInt32 DEFAULT 0,
    kafka_fingerprint UInt64 DEFAULT 0
)
ENGINE = MergeTree
ORDER BY (universe, customer_id, clicked_at)
-- Small granules for the same reason as sales_g: look-ups by thousands of random customers.
SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 256;

-- Messages that could not be decoded (also published to the dead-letter topic).
CREATE TABLE IF NOT EXISTS {database}.dead_letters_g{generation}
(
    kafka_topic       LowCardinality(String),
    kafka_partition   UInt32,
    kafka_offset      UInt64,
    log_epoch         UInt32 DEFAULT 0,
    kafka_fingerprint UInt64 DEFAULT 0,
    reason            String,
    payload           String,
    seen_at           DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (kafka_topic, kafka_partition, kafka_offset)
SETTINGS non_replicated_deduplication_window = 10000;

-- Tables created before log epochs and fingerprints existed get the columns here (a no-op
-- on new ones), before the views below read them. Old rows read as epoch 0, fingerprint 0
-- ("not known").
ALTER TABLE {database}.sales_calls_g{generation}
    ADD COLUMN IF NOT EXISTS log_epoch UInt32 DEFAULT 0 AFTER kafka_offset,
    ADD COLUMN IF NOT EXISTS kafka_fingerprint UInt64 DEFAULT 0 AFTER log_epoch;

ALTER TABLE {database}.clicks_g{generation}
    ADD COLUMN IF NOT EXISTS log_epoch UInt32 DEFAULT 0 AFTER kafka_offset,
    ADD COLUMN IF NOT EXISTS kafka_fingerprint UInt64 DEFAULT 0 AFTER log_epoch;

ALTER TABLE {database}.dead_letters_g{generation}
    ADD COLUMN IF NOT EXISTS log_epoch UInt32 DEFAULT 0 AFTER kafka_offset,
    ADD COLUMN IF NOT EXISTS kafka_fingerprint UInt64 DEFAULT 0 AFTER log_epoch;

-- Next offset to write per partition and log epoch, with the fingerprint of the record just
-- below it: max() over (offset + 1, fingerprint) pairs keeps the pair of the highest offset
-- (offsets are unique within an epoch), so the projector can check that the log still holds
-- the record it wrote last. An epoch starts when an operator accepts a new log
-- (meta.sql's log_epochs); earlier epochs stay as history.
CREATE TABLE IF NOT EXISTS {database}.log_positions_g{generation}
(
    kafka_topic       LowCardinality(String),
    kafka_partition   UInt32,
    log_epoch         UInt32,
    last_written      SimpleAggregateFunction(max, Tuple(UInt64, UInt64))
)
ENGINE = AggregatingMergeTree
ORDER BY (kafka_topic, kafka_partition, log_epoch)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.log_positions_from_sales_g{generation}
TO {database}.log_positions_g{generation} AS
SELECT kafka_topic, kafka_partition, log_epoch,
       max((kafka_offset + 1, kafka_fingerprint)) AS last_written
FROM {database}.sales_calls_g{generation} GROUP BY kafka_topic, kafka_partition, log_epoch;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.log_positions_from_clicks_g{generation}
TO {database}.log_positions_g{generation} AS
SELECT kafka_topic, kafka_partition, log_epoch,
       max((kafka_offset + 1, kafka_fingerprint)) AS last_written
FROM {database}.clicks_g{generation} GROUP BY kafka_topic, kafka_partition, log_epoch;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.log_positions_from_dead_letters_g{generation}
TO {database}.log_positions_g{generation} AS
SELECT kafka_topic, kafka_partition, log_epoch,
       max((kafka_offset + 1, kafka_fingerprint)) AS last_written
FROM {database}.dead_letters_g{generation} GROUP BY kafka_topic, kafka_partition, log_epoch;

-- Counted sales, ordered for the projector's "already counted?" look-ups. Each batch asks
-- for thousands of random keys: with the default 8192-row granules nearly every granule
-- holds one, so a look-up read the whole key column and slowed down as sales piled up;
-- 256-row granules bound what a look-up reads by the batch size, not the table size.
CREATE TABLE IF NOT EXISTS {database}.sales_g{generation}
(
    universe          LowCardinality(String),
    transaction_id    String,
    event_id          String,
    amount            Decimal(18, 4),
    currency          LowCardinality(String),
    customer_id       String,
    campaign_id       String,
    link_id           String,
    product           LowCardinality(String),
    clicked_at        Nullable(DateTime64(3, 'UTC')),
    sold_at           DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (universe, transaction_id, event_id)
SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 256;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.sales_from_calls_g{generation}
TO {database}.sales_g{generation} AS
SELECT universe, transaction_id, event_id, amount, currency, customer_id, campaign_id,
       link_id, product, clicked_at, received_at AS sold_at
FROM {database}.sales_calls_g{generation} WHERE status = 'counted';

-- Every refund call (POST /v1/refunds), with the projector's decision: counted, duplicate or
-- rejected. A counted one carries its sale's currency and attribution (campaign, link,
-- customer, product) and full_refund = 1 when it refunds what was left of the sale; its day
-- is its own received_at. A ledger like sales_calls_g: its rows carry their Kafka position,
-- and they feed log_positions_g below.
CREATE TABLE IF NOT EXISTS {database}.refunds_calls_g{generation}
(
    universe          LowCardinality(String),
    transaction_id    String,
    refund_id         String,
    event_id          String,
    status            LowCardinality(String),
    reason            LowCardinality(String),
    amount_raw        String,
    amount            Decimal(18, 4),
    currency          LowCardinality(String),
    full_refund       UInt8,
    customer_id       String,
    campaign_id       String,
    link_id           String,
    product           LowCardinality(String),
    sold_at           Nullable(DateTime64(3, 'UTC')),
    received_at       DateTime64(3, 'UTC'),
    client_hash       String,
    kafka_topic       LowCardinality(String),
    kafka_partition   UInt32,
    kafka_offset      UInt64,
    log_epoch         UInt32 DEFAULT 0,
    kafka_fingerprint UInt64 DEFAULT 0
)
ENGINE = MergeTree
ORDER BY (universe, received_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.log_positions_from_refunds_g{generation}
TO {database}.log_positions_g{generation} AS
SELECT kafka_topic, kafka_partition, log_epoch,
       max((kafka_offset + 1, kafka_fingerprint)) AS last_written
FROM {database}.refunds_calls_g{generation} GROUP BY kafka_topic, kafka_partition, log_epoch;

-- Counted refunds, ordered for the projector's look-ups of a refunded transaction (what was
-- refunded so far, which refund ids counted), in small granules like sales_g.
CREATE TABLE IF NOT EXISTS {database}.refunds_g{generation}
(
    universe          LowCardinality(String),
    transaction_id    String,
    refund_id         String,
    event_id          String,
    amount            Decimal(18, 4),
    currency          LowCardinality(String),
    full_refund       UInt8,
    customer_id       String,
    campaign_id       String,
    link_id           String,
    product           LowCardinality(String),
    refunded_at       DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (universe, transaction_id, refund_id)
SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 256;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.refunds_from_calls_g{generation}
TO {database}.refunds_g{generation} AS
SELECT universe, transaction_id, refund_id, event_id, amount, currency, full_refund,
       customer_id, campaign_id, link_id, product, received_at AS refunded_at
FROM {database}.refunds_calls_g{generation} WHERE status = 'counted';

-- The rollups' tables and materialized views (one from sales_calls_g, one from
-- refunds_calls_g each), rendered from ROLLUPS in __init__.py.
{rollup_tables};

-- Intake: what the projector inserts. ONE insert per topic per batch, into a Null table whose
-- materialized views fan the rows out to that topic's ledgers by `kind`. The ledgers' rows of
-- one partition then arrive in one insert: a batch's positions (log_positions_g, the max over
-- every ledger) can never move past a row of another ledger that a crash between two inserts
-- left unwritten (a dead letter or refund written, the calls below it not: they were skipped
-- on restart). The token of the insert deduplicates it in every table it reaches
-- (deduplicate_blocks_in_dependent_materialized_views), as a direct insert did.
CREATE TABLE IF NOT EXISTS {database}.sales_intake_g{generation}
(
    kind              LowCardinality(String),
    universe          String,
    transaction_id    String,
    event_id          String,
    source            String,
    status            String,
    reason            String,
    amount_raw        String,
    amount            Decimal(18, 4),
    currency          String,
    customer_id       String,
    campaign_id       String,
    link_id           String,
    product           String,
    clicked_at        Nullable(DateTime64(3, 'UTC')),
    received_at       DateTime64(3, 'UTC'),
    client_hash       String,
    kafka_topic       String,
    kafka_partition   UInt32,
    kafka_offset      UInt64,
    log_epoch         UInt32,
    kafka_fingerprint UInt64,
    refund_id         String,
    full_refund       UInt8,
    sold_at           Nullable(DateTime64(3, 'UTC')),
    payload           String
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.sales_calls_from_intake_g{generation}
TO {database}.sales_calls_g{generation} AS
SELECT universe, transaction_id, event_id, source, status, reason, amount_raw, amount, currency,
       customer_id, campaign_id, link_id, product, clicked_at, received_at, client_hash,
       kafka_topic, kafka_partition, kafka_offset, log_epoch, kafka_fingerprint
FROM {database}.sales_intake_g{generation} WHERE kind = 'call';

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.refunds_calls_from_intake_g{generation}
TO {database}.refunds_calls_g{generation} AS
SELECT universe, transaction_id, refund_id, event_id, status, reason, amount_raw, amount,
       currency, full_refund, customer_id, campaign_id, link_id, product, sold_at, received_at,
       client_hash, kafka_topic, kafka_partition, kafka_offset, log_epoch, kafka_fingerprint
FROM {database}.sales_intake_g{generation} WHERE kind = 'refund';

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.dead_letters_from_sales_intake_g{generation}
TO {database}.dead_letters_g{generation} AS
SELECT kafka_topic, kafka_partition, kafka_offset, log_epoch, kafka_fingerprint, reason, payload
FROM {database}.sales_intake_g{generation} WHERE kind = 'dead_letter';

CREATE TABLE IF NOT EXISTS {database}.clicks_intake_g{generation}
(
    kind              LowCardinality(String),
    universe          String,
    customer_id       String,
    campaign_id       String,
    link_id           String,
    product           String,
    clicked_at        DateTime64(3, 'UTC'),
    event_id          String,
    client_hash       String,
    kafka_topic       String,
    kafka_partition   UInt32,
    kafka_offset      UInt64,
    log_epoch         UInt32,
    kafka_fingerprint UInt64,
    reason            String,
    payload           String
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.clicks_from_intake_g{generation}
TO {database}.clicks_g{generation} AS
SELECT universe, customer_id, campaign_id, link_id, product, clicked_at, event_id, client_hash,
       kafka_topic, kafka_partition, kafka_offset, log_epoch, kafka_fingerprint
FROM {database}.clicks_intake_g{generation} WHERE kind = 'click';

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.dead_letters_from_clicks_intake_g{generation}
TO {database}.dead_letters_g{generation} AS
SELECT kafka_topic, kafka_partition, kafka_offset, log_epoch, kafka_fingerprint, reason, payload
FROM {database}.clicks_intake_g{generation} WHERE kind = 'dead_letter';

-- Fencing (docs/exactly-once.md): what the projector inserts goes into a topic's writes table
-- (the intake's columns plus `fence`), and one materialized view admits into the intake only
-- the rows whose fence is their partition's latest registration in fences_g. An instance
-- registers a new fence for every partition it is given before it reads the partition's
-- position, so a paused instance that wakes with a batch for partitions the group gave away
-- (a zombie) writes nothing: the check is made by ClickHouse when the block is inserted, not
-- by the projector before it. Both the block and the registration are plain inserts, so the
-- registering instance also waits for the writes that were running when it registered (they
-- may have been admitted just before) before it reads positions.
--
-- One registration per row: a sequence number (the partition's last plus one) and a random
-- fence; the latest is the highest (seq, fence), so two instances that race to register
-- cannot both win. Identical blocks are deduplicated: a registration sent again after an
-- unclear failure is stored once.
CREATE TABLE IF NOT EXISTS {database}.fences_g{generation}
(
    kafka_topic     LowCardinality(String),
    kafka_partition UInt32,
    seq             UInt64,
    fence           UInt64,
    owner           String,
    registered_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (kafka_topic, kafka_partition, seq)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {database}.sales_writes_g{generation}
(
    kind              LowCardinality(String),
    universe          String,
    transaction_id    String,
    event_id          String,
    source            String,
    status            String,
    reason            String,
    amount_raw        String,
    amount            Decimal(18, 4),
    currency          String,
    customer_id       String,
    campaign_id       String,
    link_id           String,
    product           String,
    clicked_at        Nullable(DateTime64(3, 'UTC')),
    received_at       DateTime64(3, 'UTC'),
    client_hash       String,
    kafka_topic       String,
    kafka_partition   UInt32,
    kafka_offset      UInt64,
    log_epoch         UInt32,
    kafka_fingerprint UInt64,
    refund_id         String,
    full_refund       UInt8,
    sold_at           Nullable(DateTime64(3, 'UTC')),
    payload           String,
    fence             UInt64
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.sales_admitted_g{generation}
TO {database}.sales_intake_g{generation} AS
SELECT kind, universe, transaction_id, event_id, source, status, reason, amount_raw, amount,
       currency, customer_id, campaign_id, link_id, product, clicked_at, received_at,
       client_hash, kafka_topic, kafka_partition, kafka_offset, log_epoch, kafka_fingerprint,
       refund_id, full_refund, sold_at, payload
FROM {database}.sales_writes_g{generation}
WHERE (kafka_topic, kafka_partition, fence) IN (
    SELECT kafka_topic, kafka_partition, argMax(fence, (seq, fence))
    FROM {database}.fences_g{generation} GROUP BY kafka_topic, kafka_partition);

CREATE TABLE IF NOT EXISTS {database}.clicks_writes_g{generation}
(
    kind              LowCardinality(String),
    universe          String,
    customer_id       String,
    campaign_id       String,
    link_id           String,
    product           String,
    clicked_at        DateTime64(3, 'UTC'),
    event_id          String,
    client_hash       String,
    kafka_topic       String,
    kafka_partition   UInt32,
    kafka_offset      UInt64,
    log_epoch         UInt32,
    kafka_fingerprint UInt64,
    reason            String,
    payload           String,
    fence             UInt64
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.clicks_admitted_g{generation}
TO {database}.clicks_intake_g{generation} AS
SELECT kind, universe, customer_id, campaign_id, link_id, product, clicked_at, event_id,
       client_hash, kafka_topic, kafka_partition, kafka_offset, log_epoch, kafka_fingerprint,
       reason, payload
FROM {database}.clicks_writes_g{generation}
WHERE (kafka_topic, kafka_partition, fence) IN (
    SELECT kafka_topic, kafka_partition, argMax(fence, (seq, fence))
    FROM {database}.fences_g{generation} GROUP BY kafka_topic, kafka_partition);
