"""The ConvoAI reference schema and its deterministic demo data.

``load_sample()`` creates the runbook's schema and fills it via COPY from a seeded generator:
the same scale and seed always give the same rows, so tests and benchmarks can compare runs.
"""

from pgdr.sample.loader import SampleReport, VectorType, load_sample, scale_counts

__all__ = ["SampleReport", "VectorType", "load_sample", "scale_counts"]
