"""Batch machinery: discover inputs, plan shards, run them on Dask, write Parquet atomically, resume."""
