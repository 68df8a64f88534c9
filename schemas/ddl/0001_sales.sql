-- Every call received, accepted or rejected: what ops read to see what the edge got.
-- ReplacingMergeTree on event_id keeps one row per call even if a batch is written twice;
-- the insert deduplication window makes a retried batch a no-op before any merge.
CREATE TABLE IF NOT EXISTS {database}.sales_calls
(
    event_id        String,
    universe        LowCardinality(String),
    transaction_id  String,
    amount_raw      String,
    amount          Nullable(Decimal(18, 4)),
    currency        LowCardinality(String),
    customer_id     String,
    click_id        String,
    source          LowCardinality(String),
    status          LowCardinality(String),
    reason          LowCardinality(String),
    received_at     DateTime64(3, 'UTC'),
    kafka_partition UInt32,
    kafka_offset    UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (universe, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per accepted sale.
CREATE TABLE IF NOT EXISTS {database}.sales
(
    universe        LowCardinality(String),
    transaction_id  String,
    event_id        String,
    amount          Decimal(18, 4),
    currency        LowCardinality(String),
    customer_id     String,
    sold_at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (universe, event_id)
SETTINGS non_replicated_deduplication_window = 1000;
