"""Dataset readers. Each returns a :class:`~core_model.data.records.ReadResult`: usable records plus
the rows it skipped, each with a reason. Readers never stop on one bad row. A config's ``data.kind``
picks its reader through one registry, :mod:`core_model.data.readers`."""

from core_model.data.records import ReadResult, Record, Skipped

__all__ = ["ReadResult", "Record", "Skipped"]
