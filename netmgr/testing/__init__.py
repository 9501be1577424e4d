"""Helpers for tests and labs: real services started on 127.0.0.1 (etcd).

Nothing here runs at import time; each helper starts its process when asked.
"""
