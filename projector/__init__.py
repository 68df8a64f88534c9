"""The projector: consumes raw events and writes the turnover tables into ClickHouse."""
