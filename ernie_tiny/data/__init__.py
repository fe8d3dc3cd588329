"""Corpus reading, token shards and the resumable data-parallel sampler."""
