"""redis-py as the Redis backend imports it: without OpenTelemetry's SDK and importlib.metadata,
which it does not use at import, and working as before (``dowork.backends.redis.importing``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from dowork.backends.redis.importing import SkipSdk, driver
from tests.redis_server import RedisServer

#: Run in a fresh interpreter: what importing the backend loads, then redis-py's own metrics
#: turned on by the application, through the SDK it imports itself.
CHECK = """
import sys

import dowork.backends.redis

assert "opentelemetry.sdk.metrics" not in sys.modules, "the SDK was imported"
assert "importlib.metadata" not in sys.modules, "importlib.metadata was imported"

from importlib import metadata

import redis
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from redis.observability import OTelConfig, get_observability_instance
from redis.observability.config import MetricGroup

assert metadata.version("redis") == redis.utils.get_lib_version()  # the stand-in, then
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
get_observability_instance().init(OTelConfig(metric_groups=[MetricGroup.COMMAND]))
redis.Redis.from_url(sys.argv[1]).ping()
data = reader.get_metrics_data()
names = {m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics}
assert "db.client.operation.duration" in names, names
"""


def test_the_backend_imports_neither_and_redis_metrics_still_work(
    redis_server: RedisServer,
) -> None:
    code = textwrap.dedent(CHECK)
    subprocess.run([sys.executable, "-c", code, redis_server.url], check=True, timeout=60)


def test_only_redis_observability_is_refused_the_sdk() -> None:
    # Asked from here (this module imports it), the finder leaves the SDK to the others.
    assert SkipSdk.find_spec("opentelemetry.sdk.metrics") is None
    assert SkipSdk.find_spec("json") is None


def test_connections_report_the_version_redis_py_would() -> None:
    from redis.driver_info import DriverInfo

    info = driver()["driver_info"]
    default = DriverInfo()  # reads the package metadata
    assert (info.formatted_name, info.lib_version) == (default.formatted_name, default.lib_version)
