"""`python -m infra.s3server` moved to `python -m infra.local.s3server` (issue 10); this shim
says so and runs it, for one release (README "The local stack by hand"). Old imports of
LocalS3 from here keep working as long."""
import sys

from infra.local.s3server import LocalS3, main  # noqa: F401  (the old import path)

if __name__ == "__main__":
    print("note: `python -m infra.s3server` is now `python -m infra.local.s3server`; running that "
          "(this old name goes away in the next release)", file=sys.stderr, flush=True)
    sys.exit(main())
