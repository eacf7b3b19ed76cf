"""Tests for plumbing.partitioning: exactly Kafka's default partitions, so per-key order holds across producers."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from plumbing.partitioning import murmur2, partition_for_key

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (the Java client's values, as signed 32-bit ints)
JAVA_CLIENT_HASHES = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), JAVA_CLIENT_HASHES.items())
def test_murmur2_matches_the_java_client(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected % 2**32


@given(st.binary(max_size=300))
@settings(max_examples=1000)
def test_murmur2_matches_aiokafka_for_any_bytes(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data)


@given(st.binary(min_size=1, max_size=120), st.integers(min_value=1, max_value=64))
@settings(max_examples=500)
def test_every_key_goes_where_the_default_partitioner_puts_it(key: bytes, partitions: int) -> None:
    all_partitions = list(range(partitions))
    assert partition_for_key(key, all_partitions, all_partitions) == DefaultPartitioner()(
        key, all_partitions, all_partitions
    )


def test_records_without_a_key_go_to_an_available_partition() -> None:
    assert {partition_for_key(None, [0, 1, 2, 3], [2]) for _ in range(20)} == {2}
