"""The edge's partitioner is Kafka's default one: other producers' keys meet ours."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner

from ingest.partitioner import partition_of
from schemas.raw import kafka_key

# Kafka's own murmur2 test vectors (clients/src/test/.../UtilsTest.java), as signed ints.
KAFKA_VECTORS = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize(("text", "signed"), KAFKA_VECTORS.items())
def test_partition_follows_kafkas_murmur2_test_vectors(text: str, signed: int) -> None:
    partitions = list(range(1_000_003))  # larger than any hash bit we drop: the index shows
    assert partition_of(text.encode(), partitions) == (signed & 0x7FFFFFFF) % len(partitions)


def test_partition_matches_aiokafkas_default_partitioner_for_any_key() -> None:
    rng = random.Random(7)
    keys = [kafka_key("shop", f"tx-{i}") for i in range(2_000)]
    keys += [rng.randbytes(rng.randrange(0, 80)) for _ in range(2_000)]
    for count in (1, 2, 3, 12, 64):
        partitions = list(range(count))
        for key in keys:
            assert partition_of(key, partitions) == DefaultPartitioner()(key, partitions, None)
