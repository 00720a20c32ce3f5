"""Each storage op is declared once, on its class: its result type (``Op[T]``), how the
storage actor schedules it and the backends' method for it. These tests hold the backends
to those declarations, so ``StorageHandle.call``'s typing tells the truth."""

from __future__ import annotations

import importlib
import typing

import pytest

from trioforge.storage import _ops as ops
from trioforge.storage.memory import MemoryBackend

OPS = [
    value
    for value in vars(ops).values()
    if isinstance(value, type) and issubclass(value, ops.Op) and value is not ops.Op
]


def _result_type(op: type[ops.Op]) -> object:
    (base,) = [b for b in op.__orig_bases__ if typing.get_origin(b) is ops.Op]  # type: ignore[attr-defined]
    (result,) = typing.get_args(base)
    return type(None) if result is None else result


@pytest.mark.parametrize(
    ("module", "backend"),
    [
        ("trioforge.storage.memory", "MemoryBackend"),
        ("trioforge.storage.sqlite", "SQLiteBackend"),
        ("trioforge.storage.postgres", "PostgresBackend"),
    ],
)
def test_every_handler_returns_its_ops_declared_result(module: str, backend: str) -> None:
    if module.endswith("postgres"):
        pytest.importorskip("asyncpg")
    cls = getattr(importlib.import_module(module), backend)
    for op in OPS:
        handler = getattr(cls, "_" + op.handler)
        assert typing.get_type_hints(handler)["return"] == _result_type(op), op.__name__


def test_every_op_declared_has_a_handler_and_is_exported() -> None:
    assert set(ops.handlers(MemoryBackend())) == set(OPS)
    assert {op.__name__ for op in OPS} <= set(ops.__all__)


def test_per_job_ops_name_the_jobs_they_write() -> None:
    with pytest.raises(TypeError, match="runs per job"):

        class Unsaid(ops.Op[None]):
            runs = ops.Runs.PER_JOB

    assert ops.Progress(7, 1, 0.5, None).writes() == {7}
    assert ops.Get(7).writes() == frozenset()
    assert ops.Cancel(7).writes() is None
