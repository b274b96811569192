"""Local stand-ins for production services, on loopback only: s3server.py (moto's S3 server
over HTTP), cassandra.py (Apache Cassandra 2.1), stack.py (both in the background, by hand),
and the demo data loaders fashion_mnist.py (into a bucket) and cassandra_load.py (into a table)."""
