"""`python -m infra.cassandra` moved to `python -m infra.local.cassandra` (issue 10); this shim
says so and runs it, for one release (README "The local stack by hand"). Old imports of
LocalCassandra from here keep working as long."""
import sys

from infra.local.cassandra import LocalCassandra, main  # noqa: F401  (the old import path)

if __name__ == "__main__":
    print("note: `python -m infra.cassandra` is now `python -m infra.local.cassandra`; running that "
          "(this old name goes away in the next release)", file=sys.stderr, flush=True)
    sys.exit(main())
