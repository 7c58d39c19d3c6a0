"""kafka-python verifies each record batch's CRC-32C: in C with the ``crc32c`` package, else in
pure Python, which a profile of the consumer found among its top costs."""

from __future__ import annotations

from kafka.record import util
from kafka.record._crc32c import crc as crc32c_pure_python


def test_kafka_python_checks_crc32c_in_c() -> None:
    assert util.crc32c_c is not None
    assert util._crc32c is util.crc32c_c


def test_the_c_and_the_pure_python_checksums_agree() -> None:
    data = memoryview(bytes(range(256)) * 64)
    assert util.calc_crc32c(data) == crc32c_pure_python(data)
