"""One run's settings: the job's flags parsed (Beam's PipelineOptions), checked and resolved
before any worker starts, so a bad flag, an unusable URL or input fails fast with one line."""
from __future__ import annotations

import os
import posixpath
import re
import uuid

from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions, S3Options,
                                                  StandardOptions, WorkerOptions)

from pipeline import decode_budget, fingerprint, preflight, runners, staging
from pipeline.dataset import naming
from pipeline.dataset.storage import S3Settings, Storage, StorageError, is_local, join, unsupported
from pipeline.options import IngestOptions
from pipeline.sources.cassandra import config as cassandra_config
from pipeline.sources.cassandra.config import CassandraConfig, CassandraSourceError
from pipeline.sources.cassandra.connection import check
from pipeline.sources.files import LayoutError, detect_layout
from pipeline.sources.label_columns import LabelColumns
from pipeline.splits import parse_ratios


class UsageError(Exception):
    """A bad flag or an input that cannot be used; the message names it."""


def make_options(argv: list[str]) -> PipelineOptions:
    """Parse flags; default to the local multi-process DirectRunner with 2 workers (a portable
    runner: 2 SDK workers, pipeline/runners.py). The S3 credentials are left out (storage_for
    takes them): Beam's workers log every option they get, and cluster runners show them in their
    UIs."""
    options = PipelineOptions(without_credentials(argv))
    flags = " ".join(argv)
    if "--runner" not in flags:
        options.view_as(StandardOptions).runner = "DirectRunner"
    if options.view_as(StandardOptions).runner in (None, "DirectRunner"):
        direct = options.view_as(DirectOptions)
        if "--direct_running_mode" not in flags:
            direct.direct_running_mode = "multi_processing"   # real worker processes, no Prism download
        if "--direct_num_workers" not in flags:
            direct.direct_num_workers = 2
    elif runners.is_portable(options):
        runners.set_portable_defaults(options, argv)
    return options


# Runners whose workers are processes on this machine, so they see its local paths.
LOCAL_RUNNERS = ("DirectRunner", "PrismRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")


CREDENTIAL_FLAGS = ("--s3_access_key_id", "--s3_secret_access_key", "--s3_session_token")


def without_credentials(argv: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in argv:
        if not skip and arg.split("=", 1)[0] not in CREDENTIAL_FLAGS:
            kept.append(arg)
        skip = not skip and arg in CREDENTIAL_FLAGS
    return kept


def storage_for(argv: list[str]) -> Storage:
    """Beam's own --s3_* flags, as Beam's S3 client takes them, for every worker's client (the
    Storage travels to the workers inside the job's DoFns, never as a logged option)."""
    s3 = PipelineOptions(argv).view_as(S3Options)
    return Storage(settings=S3Settings(
        endpoint_url=s3.s3_endpoint_url, region=s3.s3_region_name,
        access_key_id=s3.s3_access_key_id, secret_access_key=s3.s3_secret_access_key,
        session_token=s3.s3_session_token, verify=tls_verify(s3.s3_verify),
        use_ssl=not s3.s3_disable_ssl, api_version=s3.s3_api_version))


def tls_verify(flag: str | None) -> bool | str | None:
    """--s3_verify: false turns certificate checks off, a path names a CA bundle."""
    if flag is None or flag.lower() in ("true", "1", "yes"):
        return None
    if flag.lower() in ("false", "0", "no"):
        return False
    if not os.path.isfile(flag):
        raise UsageError(f"--s3_verify {flag}: no such CA bundle file (or use true/false)")
    return flag


def check_runner(options: PipelineOptions, plan: "Plan") -> None:
    """A cluster runner's workers (a portable runner's too) do not see this machine's disk: a
    local --source/--output would be read or written on each worker's own disk, so it is refused
    unless --shared_filesystem says every worker mounts it at the same path. A portable runner's
    job service must answer (pipeline/runners.py)."""
    runner = runners.runner_name(options)
    if runner not in LOCAL_RUNNERS and not options.view_as(IngestOptions).shared_filesystem:
        for flag, url in (("source", plan.source), ("output", plan.output)):
            if is_local(url):
                raise UsageError(f"--{flag} {url} is a local path but --runner {runner} runs its "
                                 "workers elsewhere: use s3://, or pass --shared_filesystem if "
                                 "every worker mounts it at that path")
    if runners.is_portable(options):
        try:
            runners.check_job_service(options)
        except runners.RunnerError as e:
            raise UsageError(str(e)) from None


class Plan:
    """Checked, resolved settings for one run (fails fast, before any worker starts)."""

    def __init__(self, options: PipelineOptions, storage: Storage):
        o = options.view_as(IngestOptions)
        for flag in ("source", "output"):
            if not getattr(o, flag):
                raise UsageError(f"--{flag} is required (see --help)")
        for flag in ("source", "output", "labels_file", "classes"):
            url = getattr(o, flag) or ""
            if not url.startswith(cassandra_config.SCHEME) and unsupported(url):
                raise UsageError(f"--{flag} {unsupported(url)}")
        self.span = self._span(o.span)
        self.source = self._in_span(o.source).rstrip("/")
        self.output = join(o.output.rstrip("/"), self.span) if self.span else o.output.rstrip("/")
        self.name = o.name or posixpath.basename(o.output.rstrip("/"))
        self.label_attribute, self.index = o.label_attribute, not o.no_index
        self.columns = LabelColumns(o.key_column, o.label_column, o.split_column)
        self.channels, self.resize = o.channels, self._size(o.resize)
        self.num_readers, self.num_shards = o.num_readers, o.num_shards
        self.target_shard_bytes = int(o.target_shard_mb * 2**20)
        self.max_pixels, self.overwrite = o.max_pixels, o.overwrite
        self.max_image_bytes = o.max_image_bytes           # issue 26: every object's byte cap
        self.keep_versions, self.strict_classes = o.keep_versions, o.strict_classes
        self.lease_seconds, self.reingest, self.options = o.staging_lease_seconds, o.reingest, options
        if self.lease_seconds <= 0:
            raise UsageError(f"--staging_lease_seconds {self.lease_seconds:g}: must be > 0")
        self.fetch_threads = max(1, o.fetch_threads)
        if self.max_image_bytes < 1:
            raise UsageError(f"--max_image_bytes {self.max_image_bytes}: must be at least 1")
        self.orientation = not o.ignore_orientation
        self.worker_memory = worker_memory(o.worker_memory_gb, self.max_pixels)
        if self.num_readers < 1 or self.num_shards < 0:
            raise UsageError("--num_readers must be >= 1 and --num_shards >= 0")
        if self.keep_versions < 1:
            raise UsageError(f"--keep_versions {self.keep_versions}: keep at least 1 (the new one)")
        try:
            self.ratios = parse_ratios(o.splits)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if self.channels not in (0, 1, 3):
            raise UsageError(f"--channels {self.channels}: use 1 (grey), 3 (RGB) or 0 (keep)")
        self.run_id = uuid.uuid4().hex[:12]
        self.log_file = o.log_file or os.path.join("runs", "logs", f"ingest-{self.run_id}.log")
        self.log_level = o.log_level or ("INFO" if o.verbose else None)
        self.progress_seconds = max(0.5, o.progress_seconds)
        self.staging = join(self.output, naming.staging_folder(self.run_id))
        self.cassandra = self._cassandra(options) if self.source.startswith(cassandra_config.SCHEME) else None
        try:
            self.classes = self._classes(o.classes, storage)
            if self.cassandra:
                self.layout, self.labels = "cassandra", None
                self._check_output(storage)
            else:
                self.layout, self.labels = detect_layout(storage, self.source, o.layout,
                                                         self._in_span(o.labels_file))
                self._check_inputs(storage)
        except (StorageError, LayoutError, preflight.PreflightError) as e:
            raise UsageError(str(e)) from None

    def _cassandra(self, options: PipelineOptions) -> CassandraConfig:
        try:
            config = cassandra_config.config_from(options.view_as(IngestOptions), self.source,
                                                  workers(options))
            check(config)
        except CassandraSourceError as e:
            raise UsageError(str(e)) from None
        return config

    def _in_span(self, url: str | None) -> str | None:
        """`{span}` in an input path becomes the span: s3://raw/{span}/ reads one day's data."""
        if url and "{span}" in url and not self.span:
            raise UsageError(f"{url} contains {{span}}: pass --span")
        return url.replace("{span}", self.span) if url and self.span else url

    @staticmethod
    def _span(span: str | None) -> str | None:
        if span and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", span):
            raise UsageError(f"--span {span!r}: use a date or version such as 2026-11-23")
        return span

    @staticmethod
    def _size(text: str | None) -> tuple[int, int] | None:
        if not text:
            return None
        match = re.fullmatch(r"(\d+)x(\d+)", text.strip())
        if not match or 0 in (int(match[1]), int(match[2])):
            raise UsageError(f"--resize {text!r}: use HEIGHTxWIDTH, e.g. 224x224")
        return int(match[1]), int(match[2])

    @staticmethod
    def _classes(spec: str | None, storage: Storage) -> list[str] | None:
        if not spec:
            return None
        if "," not in spec and (not is_local(spec) or storage.exists(spec)):
            try:
                lines = storage.read_text(spec).splitlines()
            except FileNotFoundError:
                raise UsageError(f"--classes file {spec} does not exist") from None
            names = [line.strip() for line in lines if line.strip()]
        else:
            names = [name.strip() for name in spec.split(",") if name.strip()]
        if len(set(names)) != len(names) or not names:
            raise UsageError(f"--classes {spec}: the class list is empty or has duplicates")
        return names

    def _check_inputs(self, storage: Storage):
        if next(storage.list(self.source), None) is None:
            raise UsageError(f"--source {self.source}: no objects there")
        if self.labels and not storage.exists(self.labels):
            raise UsageError(f"labels file {self.labels} does not exist (pass --labels_file)")
        if self.labels:
            preflight.check_labels_file(storage, self.labels, self.columns)
        self._check_output(storage)

    def _check_output(self, storage: Storage):
        self.fingerprint = fingerprint.of_run(storage, self.options, self)
        self.already = None if self.reingest else fingerprint.published(storage, self.output, self.fingerprint)
        self.leftovers = staging.find(storage, self.output)     # of earlier runs (removed at start)
        if self.already:
            return                        # nothing to do but remove those: __main__ says so
        if storage.exists(join(self.output, naming.MANIFEST_NAME)) and not self.overwrite:
            raise UsageError(f"a dataset is already published at {self.output} "
                             "(pass --overwrite to replace it)")
        preflight.check_output_writable(storage, self.output, self.run_id)


def workers(options: PipelineOptions) -> int:
    """How many workers the runner will use (what the Cassandra source sizes its splits for)."""
    if options.view_as(StandardOptions).runner in (None, "DirectRunner", "PortableRunner"):
        count = options.view_as(DirectOptions).direct_num_workers
    else:
        count = options.view_as(WorkerOptions).max_num_workers or options.view_as(WorkerOptions).num_workers
    return max(1, count or 1)


def worker_memory(gb: float, max_pixels: int) -> int:
    """--worker_memory_gb in bytes; refused when one image of --max_pixels could not be decoded in it."""
    need = decode_budget.worst_case(max_pixels)
    if gb * 2**30 < need:
        raise UsageError(f"--worker_memory_gb {gb:g} is less than one image of --max_pixels {max_pixels:,} "
                         f"may need while it is decoded ({need / 2**30:.2f} GiB): raise it or lower --max_pixels")
    return int(gb * 2**30)
