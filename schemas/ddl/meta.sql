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
