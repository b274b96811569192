"""The Cassandra source: one image per row of a table, read in parallel token ranges.

    config.py      the cassandra:// URL, the --cassandra_* flags, CassandraConfig
    connection.py  credentials, TLS, the driver session, one-line errors, the pre-run check
    ring.py        token-ring arithmetic (no driver)
    read.py        ReadRows: split the ring, spread the ranges, read each exactly once
"""
