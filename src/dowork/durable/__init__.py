"""The durable task source: the engine, with tasks kept in a store instead of in memory."""

from .settings import DurableSettings
from .source import DurableSource
from .state import decode_progress, encode_progress

__all__ = ["DurableSettings", "DurableSource", "decode_progress", "encode_progress"]
