"""Training data: datasets, token shards and their preparation from a corpus; `python -m smallgpt.data`."""

from smallgpt.data.datasets import (
    RandomWindowBatches,
    TextDataset,
    TokenShardDataset,
)
from smallgpt.data.prepare import (
    PREPARED_FROM_FILE,
    PreparedData,
    prepare_data,
)
from smallgpt.data.shards import (
    SHARD_FORMAT,
    SHARD_VERSION,
    SPLITS,
    STATE_FILE,
    bytes_per_token,
    held_out,
    load_meta,
    prepare_shards,
)
from smallgpt.model.config import IGNORE_INDEX

__all__ = [
    "IGNORE_INDEX",
    "PREPARED_FROM_FILE",
    "SHARD_FORMAT",
    "SHARD_VERSION",
    "SPLITS",
    "STATE_FILE",
    "PreparedData",
    "RandomWindowBatches",
    "TextDataset",
    "TokenShardDataset",
    "bytes_per_token",
    "held_out",
    "load_meta",
    "prepare_data",
    "prepare_shards",
]
