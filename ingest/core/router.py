"""Which pipeline takes a table's events: one `TablePipeline` per table,
made on first use. The key is the table name as the sink resolves it
(case-insensitive: the first spelling, or the sink's, is the table)."""
from __future__ import annotations

from ingest.core.pipeline import PipelineContext, TablePipeline


class Router:
    def __init__(self, context: PipelineContext):
        self._context = context
        self.pipelines: dict[str, TablePipeline] = {}  # resolved table name -> its pipeline

    def pipeline(self, table: str) -> TablePipeline:
        table = self._context.sink.resolve_table(table)
        pipeline = self.pipelines.get(table)
        if pipeline is None:
            pipeline = self.pipelines[table] = TablePipeline(table, self._context)
        return pipeline
