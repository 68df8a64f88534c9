-- Which generation of the tables is live. Tables are built per generation so that
-- `python -m projector rebuild` can replay the whole log into fresh tables while the live
-- ones keep serving, then switch every public view at once. Live = max(generation).
CREATE TABLE IF NOT EXISTS {database}.generations
(
    generation   UInt32,
    activated_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY generation;

-- Log epochs accepted by an operator (`python -m projector accept-log`), per generation:
-- when a partition's log went backwards (topic recreated, broker storage lost or restored),
-- the projector refuses it until someone decides. Accepting starts epoch N+1 at start_offset
-- of the log as it is now; positions of the new epoch start there, rows of earlier epochs
-- stay counted. A rebuild's new generation starts again at epoch 0 (it replays the log as it
-- is). Read by every projector instance, so one command resumes the partition everywhere.
CREATE TABLE IF NOT EXISTS {database}.log_epochs
(
    generation      UInt32,
    kafka_topic     LowCardinality(String),
    kafka_partition UInt32,
    log_epoch       UInt32,
    start_offset    UInt64,
    reason          String,
    accepted_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (generation, kafka_topic, kafka_partition, log_epoch);
