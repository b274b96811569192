"""The nightly retrain's configuration: one YAML file, defaults for everything but the data.

    name: fashion_mnist                  # dataset and model name
    root: s3://ml                        # datasets/<name>/<date>/ and models/<name>/ live here
    ingest:                              # flags of `python -m pipeline` for the new span
      source: s3://raw/fashion/{date}/images       # {date} (or {span}) is the night, YYYY-MM-DD
      labels_file: s3://raw/fashion/{date}/labels.csv
      classes: s3://raw/fashion/classes.txt
      splits: train:0.9,validation:0.1
      args: [--runner, FlinkRunner, ...]            # any further pipeline/Beam flags (never
                                                    # credentials: they come from the environment)
      timeout_seconds: 21600             # the job is ended (and the night fails) after this long
    train:
      launcher: local                    # local (horovodrun here) | mpijob (Kubernetes)
      processes: 2
      epochs: 2
      batch_size: 64
      warm_start: true                   # --init-from the promoted model when there is one
      args: []                           # any further trainer flags
      timeout_seconds: 43200             # launcher local: horovodrun is ended after this long
    evaluation:                          # the fixed split both models are scored on
      dataset: s3://ml/datasets/fashion_mnist-eval
      split: test
      metric: accuracy                   # accuracy | macro_f1
    data_check:                          # the span against the promoted model's dataset; null: off
      max_quarantine_rate: 0.05          # quarantined / all images of the span
      max_class_share_change: 0.5        # per class: |share now - share before| / share before
      max_record_count_change: 0.5       # |records now - records before| / records before
    promotion:
      tolerance: 0.005                   # promote unless new < promoted - tolerance, or
                                         # new < best promoted so far - tolerance
    lock:
      ttl_seconds: 900                   # a crashed run's lock expires this long after its last heartbeat
    score:                               # after a promotion, score new images (scoring.py); null: off
      source: s3://incoming/fashion/{date}/
    mpijob:                              # only for launcher: mpijob
      namespace: ml
      template: /etc/nightly/mpijob-trainer.yaml
      timeout_seconds: 21600
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import yaml

DEFAULTS = {
    "ingest": {"splits": "train:0.9,validation:0.1", "args": [], "timeout_seconds": 21600},
    "train": {"launcher": "local", "processes": 2, "epochs": 2, "batch_size": 64,
              "warm_start": True, "args": [], "timeout_seconds": 43200},
    "evaluation": {"split": "test", "metric": "accuracy"},
    "data_check": {"max_quarantine_rate": 0.05, "max_class_share_change": 0.5,
                   "max_record_count_change": 0.5},
    "promotion": {"tolerance": 0.005},
    "lock": {"ttl_seconds": 900},
    "score": None,
    "mpijob": {"namespace": "default", "template": "/etc/nightly/mpijob-trainer.yaml",
               "timeout_seconds": 21600, "poll_seconds": 10},
}
# ingest.classes: every span and the evaluation set must index the same class list, or a night
# missing a class would be scored against shifted labels.
REQUIRED = ("name", "root", "ingest.source", "ingest.labels_file", "ingest.classes",
            "evaluation.dataset")
LAUNCHERS = ("local", "mpijob")
# Flags whose values are credentials (Beam's S3 flags): a child's command line is readable by
# every local user for as long as it runs, so the config may not hold them.
SECRET_FLAGS = ("--s3_access_key_id", "--s3_secret_access_key", "--s3_session_token")
METRICS = ("accuracy", "macro_f1")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the file."""


@dataclass
class NightlyConfig:
    raw: dict
    path: str

    def get(self, dotted: str):
        node = self.raw
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    # -- where things live ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.raw["name"]

    @property
    def root(self) -> str:
        return self.raw["root"].rstrip("/")

    @property
    def datasets_url(self) -> str:
        return f"{self.root}/datasets/{self.name}"

    def span_url(self, date: str) -> str:
        """Where `python -m pipeline --output <datasets_url> --span <date>` publishes."""
        return f"{self.datasets_url}/{date}"

    @property
    def models_url(self) -> str:
        return f"{self.root}/models/{self.name}"

    def version_url(self, version: str) -> str:
        return f"{self.models_url}/versions/{version}"


def merge(defaults: dict, given: dict) -> dict:
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        out[key] = merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def from_dict(given: dict, path: str = "<dict>") -> NightlyConfig:
    if not isinstance(given, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    config = NightlyConfig(merge(DEFAULTS, given), path)
    check(config)
    return config


def load(path: str) -> NightlyConfig:
    try:
        with open(path) as f:
            given = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    return from_dict(given or {}, path)


def check(config: NightlyConfig) -> None:
    where = config.path
    for key in REQUIRED:
        if config.get(key) in (None, ""):
            raise ConfigError(f"{where}: missing required key {key!r}")
    if not str(config.get("root")).startswith(("s3://", "/")):
        raise ConfigError(f"{where}: root must be an s3:// URL or an absolute path, got {config.get('root')!r}")
    choice("train.launcher", LAUNCHERS, config)
    choice("evaluation.metric", METRICS, config)
    for key in ("train.processes", "train.epochs", "train.batch_size", "lock.ttl_seconds",
                "ingest.timeout_seconds", "train.timeout_seconds"):
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{where}: {key} must be a positive integer, got {value!r}")
    tolerance = config.get("promotion.tolerance")
    if not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise ConfigError(f"{where}: promotion.tolerance must be a number >= 0, got {tolerance!r}")
    for key in ("max_quarantine_rate", "max_class_share_change", "max_record_count_change"):
        value = config.get(f"data_check.{key}")
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                  or value < 0 or (key == "max_quarantine_rate" and value > 1)):
            raise ConfigError(f"{where}: data_check.{key} must be a number >= 0"
                              f"{' and <= 1' if key == 'max_quarantine_rate' else ''} or null, "
                              f"got {value!r}")
    if not isinstance(config.get("train.warm_start"), bool):
        raise ConfigError(f"{where}: train.warm_start must be true or false, got {config.get('train.warm_start')!r}")
    check_score(config)
    for key in ("ingest.args", "train.args") + (("score.args",) if config.get("score") else ()):
        if not isinstance(config.get(key), list):
            raise ConfigError(f"{where}: {key} must be a list of flags, got {config.get(key)!r}")
        secret = next((a for a in map(str, config.get(key)) if a.split("=", 1)[0] in SECRET_FLAGS), None)
        if secret:
            raise ConfigError(f"{where}: {key} holds {secret.split('=', 1)[0]}: a credential on a "
                              "command line is readable by every local user while the job runs; set "
                              "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_SHARED_CREDENTIALS_FILE) "
                              "in the nightly's environment instead")
    check_trainer_flags(config)


def check_trainer_flags(config: NightlyConfig) -> None:
    """The trainer's flags of a night (train.*), checked as `python -m trainer` checks them before
    TensorFlow starts (model names, URL schemes, flags that need each other): a bad one fails
    the config, not a night hours later, after its ingestion."""
    from infra.nightly.launch import trainer_flags
    from trainer.checks import check_flags
    from trainer.config import TrainConfig
    from trainer.errors import UsageError
    from trainer.flags import FlagError, parser

    flags = trainer_flags(config.span_url("<date>"), config.version_url("<date>"), config.raw["train"], None)
    try:
        check_flags(TrainConfig.from_args(parser().parse_args(flags)))
    except FlagError as e:
        raise ConfigError(f"{config.path}: train.args: {e} (see python -m trainer --help)") from None
    except UsageError as e:
        raise ConfigError(f"{config.path}: train: {e}") from None


def check_score(config: NightlyConfig) -> None:
    """`score:` is off (null) or names a source; its args and time limit have defaults."""
    score = config.get("score")
    if score is None:
        return
    if not isinstance(score, dict) or not score.get("source"):
        raise ConfigError(f"{config.path}: score must be null or a mapping with a source, got {score!r}")
    config.raw["score"] = {"args": [], "timeout_seconds": 21600, **score}
    limit = config.get("score.timeout_seconds")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        raise ConfigError(f"{config.path}: score.timeout_seconds must be a positive integer, got {limit!r}")


def choice(key: str, allowed: tuple, config: NightlyConfig) -> None:
    if config.get(key) not in allowed:
        raise ConfigError(f"{config.path}: {key} must be one of {', '.join(allowed)}, got {config.get(key)!r}")
