"""citymesh domain rules: taxonomy labels, rating aggregation, lineage, freshness, disclosure control.

Pure: no I/O. Imports only citymesh.protocol.
"""
