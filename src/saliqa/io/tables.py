"""Tables on disk: one declared schema per table, written atomically with their provenance.

A :class:`TableSchema` is the single declaration of a table's columns and types: rows become a frame through
it, frames are written through it, the file is read back through it, and an empty table has its columns and
dtypes too. Booleans and integers that may be missing read back as pandas' nullable dtypes. Provenance (the
stage, fingerprint, settings and versions that made a table) rides in the parquet schema's metadata.

Big tables (``eval.parquet`` holds a row per image and condition) are never needed whole: readers name the
columns they use, keep only the rows they need while the file is read (:func:`read_frame` with ``where``) or go through it
one row group at a time (:func:`iter_row_groups`), so memory follows what a summary needs, not the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from saliqa.io.atomic import atomic_path

PROVENANCE_KEY = b"saliqa.provenance"
NULLABLE = {pa.bool_(): pd.BooleanDtype(), pa.int64(): pd.Int64Dtype()}
"""Arrow types read back as pandas' nullable dtypes (a boolean or an integer may be missing)."""


def _with_provenance(schema: pa.Schema, meta: dict[str, Any] | None) -> pa.Schema:
    if meta is None:
        return schema
    return schema.with_metadata(
        {**(schema.metadata or {}), PROVENANCE_KEY: json.dumps(meta, default=str).encode()}
    )


class TableSchema:
    """The columns of one table, in order, with their arrow types."""

    def __init__(self, name: str, columns: Sequence[tuple[str, pa.DataType]]) -> None:
        self.name = name
        self.arrow = pa.schema(list(columns))

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.arrow.names)

    def row(self, **values: Any) -> dict[str, Any]:
        """One row with every column, missing values None; an unknown column is a bug."""
        unknown = set(values) - set(self.columns)
        if unknown:
            raise KeyError(f"{self.name} has no column(s) {sorted(unknown)}")
        return {column: values.get(column) for column in self.columns}

    def frame(self, rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
        """Rows as a frame of this table's columns and dtypes (nullable where a value may be missing)."""
        table = pa.Table.from_pylist(list(rows), schema=self.arrow)
        return table.to_pandas(types_mapper=NULLABLE.get)

    def empty(self) -> pd.DataFrame:
        return self.frame([])

    def read(
        self, path: str | Path, columns: list[str] | None = None, where: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """The table at ``path`` with this schema's dtypes (only ``columns``, and only the rows equal to ``where``,
        when given)."""
        return read_frame(path, columns, where)

    def write(self, path: str | Path, frame: pd.DataFrame, meta: dict[str, Any] | None = None) -> None:
        """Write ``frame`` (this schema's columns) atomically, with ``meta`` as its provenance."""
        write_table(path, frame[list(self.columns)], meta, schema=self.arrow)

    def write_parts(
        self, path: str | Path, parts: Sequence[Path], meta: dict[str, Any] | None = None
    ) -> None:
        """Stream parquet ``parts`` of this schema into one table, atomically, one part in memory at a time."""
        write_parts(path, parts, self.arrow, meta)


def write_table(
    path: str | Path, frame: pd.DataFrame, meta: dict[str, Any] | None = None, schema: pa.Schema | None = None
) -> None:
    """Write a parquet table atomically, with ``meta`` (JSON) in its schema metadata, optionally of ``schema``."""
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    table = table.replace_schema_metadata(_with_provenance(table.schema, meta).metadata)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_parts(
    path: str | Path, parts: Sequence[Path], schema: pa.Schema, meta: dict[str, Any] | None = None
) -> None:
    """Stream parquet ``parts`` (all of ``schema``) into one table, atomically, one part in memory at a time."""
    schema = _with_provenance(schema, meta)
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for part in parts:
            writer.write_table(pq.read_table(part, schema=schema))


def read_frame(
    path: str | Path, columns: list[str] | None = None, where: dict[str, Any] | None = None
) -> pd.DataFrame:
    """A parquet table as a frame with nullable dtypes: only ``columns`` when given, and only the rows whose
    values equal ``where``'s (column -> value), kept one row group at a time while the file is read (in file
    order), so memory holds the result and one row group, never the whole file."""
    if not where:
        return pq.read_table(path, columns=columns).to_pandas(types_mapper=NULLABLE.get)
    wanted = columns if columns is not None else column_names(path)
    needed = list(dict.fromkeys([*wanted, *where]))
    parts = [group.filter(_matches(group, where)).select(wanted) for group in iter_row_groups(path, needed)]
    schema = pq.read_schema(path)
    table = pa.concat_tables(parts) if parts else schema.empty_table().select(wanted)
    return table.to_pandas(types_mapper=NULLABLE.get)


def _matches(group: pa.Table, where: dict[str, Any]) -> pa.ChunkedArray | pa.Array:
    """Rows of ``group`` equal to every value of ``where`` (a missing value matches nothing)."""
    mask = None
    for column, value in where.items():
        equal = pc.fill_null(pc.equal(group.column(column), pa.scalar(value)), False)
        mask = equal if mask is None else pc.and_(mask, equal)
    return mask


def iter_row_groups(path: str | Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The rows of a parquet table in file order, ``columns`` only, one row group at a time: a pass over a
    table of any size holds one row group of the named columns, and two passes see the same groups."""
    with pq.ParquetFile(path) as handle:
        for group in range(handle.num_row_groups):
            yield handle.read_row_group(group, columns=columns)


def column_names(path: str | Path) -> list[str]:
    """The columns of a parquet table, from its footer."""
    return list(pq.read_schema(path).names)


def read_provenance(path: str | Path) -> dict[str, Any] | None:
    """The provenance recorded in a table written here, if any (None also for a file that is not a table)."""
    try:
        raw = (pq.read_schema(path).metadata or {}).get(PROVENANCE_KEY)
    except (OSError, pa.ArrowException):
        return None
    return json.loads(raw) if raw else None
