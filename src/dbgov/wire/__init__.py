"""Database wire protocols: sans-I/O codecs that know nothing about policy."""
