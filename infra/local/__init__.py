"""Real services on loopback for the demo and the tests: s3server.py (the S3 server: SeaweedFS,
seaweedfs.py; moto_s3.py, a mock, where the wheel is missing), cassandra.py (Apache Cassandra
2.1), stack.py (both in the background, by hand), hosts.py (test hosts in network namespaces),
and the demo data loaders fashion_mnist.py (into a bucket) and cassandra_load.py (into a table)."""
