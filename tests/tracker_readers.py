"""Reading a W&B offline run back: wandb's own protobuf `Record`, framed in its LevelDB-style log (.wandb file).

wandb >= 0.19 no longer ships a Python reader of its transaction log (the Go core reads it for `wandb sync`),
so the framing is unpacked here: a 7-byte file header (":W&B", magic 0xBEE1, version 0), then 32 KiB blocks of
chunks, each a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) and its bytes; a block's
tail shorter than a chunk header is zero padding. Every payload is decoded with wandb.proto."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = struct.Struct("<IHB")


def wandb_records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), (ident, magic, version)
    records, pos, pending = [], 7, b""
    while pos + HEADER.size <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER.size:
            pos += left_in_block
            continue
        _crc, length, kind = HEADER.unpack_from(data, pos)
        pos += HEADER.size
        chunk, pos = data[pos : pos + length], pos + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_run(folder: Path) -> dict[str, Any]:
    """{"group", "tags", "name", "config": {key: value}, "history": [{key: value}], "summary": {...}} of the
    offline run under folder/wandb."""
    [log] = folder.glob("wandb/offline-run-*/run-*.wandb")
    out: dict[str, Any] = {"config": {}, "history": [], "summary": {}}
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.update(group=record.run.run_group, tags=list(record.run.tags), name=record.run.display_name)
            out["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in record.history.item})
        elif kind == "summary":
            out["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in record.summary.update})
    return out
