"""Real services on loopback for the demo and the tests: s3server.py (the S3 server: SeaweedFS,
seaweedfs.py; moto_s3.py, a mock, where the wheel is missing), faultproxy.py (a test utility that
injects S3 faults; httpwire.py frames its HTTP), cassandra.py (Apache Cassandra 2.1), stack.py
(both in the background, by hand), hosts.py (test hosts in network namespaces), beam_cluster.py
(Beam's job service, job_service.py, and SDK worker pools, worker_pool.py), processes.py (their
processes), and the demo data loaders fashion_mnist.py, mnist.py, photos.py (into a bucket or a
folder) and cassandra_load.py (into a table)."""
