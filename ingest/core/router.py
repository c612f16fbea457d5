"""Which pipeline takes a table's events: one `TablePipeline` per table,
made on first use. The key is the table name as the sink resolves it
(case-insensitive: the first spelling, or the sink's, is the table)."""
from __future__ import annotations

from ingest.core.pipeline import PipelineContext, TablePipeline

MAX_SPELLINGS = 10_000  # spellings remembered at most (the sink resolves the others again)


class Router:
    def __init__(self, context: PipelineContext):
        self._context = context
        self.pipelines: dict[str, TablePipeline] = {}  # resolved table name -> its pipeline
        self._spellings: dict[str, TablePipeline] = {}  # a name as clients spell it -> its pipeline

    def pipeline(self, table: str) -> TablePipeline:
        pipeline = self._spellings.get(table)  # a name resolves once and for all: asked once per spelling
        if pipeline is None:
            resolved = self._context.sink.resolve_table(table)
            pipeline = self.pipelines.get(resolved)
            if pipeline is None:
                pipeline = self.pipelines[resolved] = TablePipeline(resolved, self._context)
            if len(self._spellings) >= MAX_SPELLINGS:
                self._spellings.clear()
            self._spellings[table] = pipeline
        return pipeline
