-- The public SQL surface: stable names over the live generation's tables. Each is exact with
-- a plain SELECT (no FINAL, no GROUP BY by the reader), even before any merge.

CREATE OR REPLACE VIEW {database}.sales AS
SELECT universe, transaction_id, amount, currency, customer_id, campaign_id, link_id,
       product, clicked_at, sold_at, event_id
FROM {database}.sales_g{generation};

CREATE OR REPLACE VIEW {database}.sales_calls AS
SELECT universe, transaction_id, amount_raw, status, reason, received_at, event_id, source,
       amount, currency, customer_id, campaign_id, link_id, product, clicked_at
FROM {database}.sales_calls_g{generation};

CREATE OR REPLACE VIEW {database}.refunds_calls AS
SELECT universe, transaction_id, refund_id, amount_raw, status, reason, received_at, event_id,
       amount, currency, full_refund, customer_id, campaign_id, link_id, product, sold_at
FROM {database}.refunds_calls_g{generation};

CREATE OR REPLACE VIEW {database}.refunds AS
SELECT universe, transaction_id, refund_id, amount, currency, full_refund, customer_id,
       campaign_id, link_id, product, refunded_at, event_id
FROM {database}.refunds_g{generation};

CREATE OR REPLACE VIEW {database}.clicks AS
SELECT universe, customer_id, campaign_id, link_id, clicked_at, product, event_id
FROM {database}.clicks_g{generation};

CREATE OR REPLACE VIEW {database}.dead_letters AS
SELECT kafka_topic, kafka_partition, kafka_offset, reason, payload, seen_at
FROM {database}.dead_letters_g{generation};

-- The rollups' views (campaign_turnover, customer_turnover, link_turnover,
-- campaign_turnover_daily), rendered from ROLLUPS in __init__.py.
{rollup_views};

-- Segmentation by total (net: refunds deducted) purchase amount in one currency (bounds inclusive; currency '' for
-- calls that named none):
--   SELECT * FROM tracker.customers_by_turnover(universe='u', currency='EUR', min=100, max=1000)
-- There is no form without a currency: a customer who paid in EUR and in USD has no single
-- total to compare with one pair of bounds, and no conversion rates are kept.
CREATE OR REPLACE VIEW {database}.customers_by_turnover AS
SELECT customer_id, purchases, turnover
FROM {database}.customer_turnover
WHERE universe = {universe:String}
  AND currency = {currency:String}
  AND turnover >= {min:Decimal(38, 4)}
  AND turnover <= {max:Decimal(38, 4)};
