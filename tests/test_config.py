"""Settings from the environment (contract 5)."""

from __future__ import annotations

import pytest

from pipeline._config import ConfigError, Mode, load_settings, resolve_mode

BASE = {
    "SQS_EXPORT_JOBS_URL": "http://127.0.0.1:5000/123/jobs",
    "S3_BUCKET_NAME": "exports-bucket",
    "EXPORT_API_BASE_URL": "http://127.0.0.1:8081",
}


class TestDefaults:
    def test_contract_defaults(self) -> None:
        """Unset variables take the contract's defaults."""
        settings = load_settings(BASE, Mode.ALL)
        assert settings.aws_region == "us-east-1"
        assert settings.s3_prefix == "exports/"
        assert settings.dynamodb_metadata_table == "export-metadata"
        assert settings.dynamodb_jobs_table == "export-jobs"
        assert settings.export_poll_interval_seconds == 30
        assert settings.export_max_wait_seconds == 21600
        assert settings.export_api_max_attempts == 5
        assert settings.max_entry_size_mb == 4096
        assert settings.max_compression_ratio == 200
        assert settings.max_concurrent_jobs == 20
        assert settings.max_file_size_mb == 1024
        assert settings.shutdown_grace_seconds == 25
        assert settings.health_port == 8080
        assert settings.log_level == "info"
        assert settings.worker_pool_size >= 1
        assert settings.export_download_allowed_hosts == frozenset()
        assert settings.export_api_token is None
        assert settings.sqs_export_jobs_high_url is None
        assert settings.sqs_download_tasks_high_url is None

    def test_values_are_parsed(self) -> None:
        """Numbers, host lists and the empty prefix are read as typed values."""
        env = {
            **BASE,
            "MAX_CONCURRENT_JOBS": "7",
            "EXPORT_POLL_INTERVAL_SECONDS": "0.5",
            "EXPORT_DOWNLOAD_ALLOWED_HOSTS": "Files.Example.com, 127.0.0.2:9000 ,",
            "S3_PREFIX": "",
            "LOG_LEVEL": "DEBUG",
        }
        settings = load_settings(env, Mode.ALL)
        assert settings.max_concurrent_jobs == 7
        assert settings.export_poll_interval_seconds == 0.5
        assert settings.export_download_allowed_hosts == {"files.example.com", "127.0.0.2:9000"}
        assert settings.s3_prefix == ""
        assert settings.log_level == "debug"

    def test_high_lane(self) -> None:
        """The high queues are read when set (the task one with the normal task queue)."""
        env = {
            **BASE,
            "SQS_EXPORT_JOBS_HIGH_URL": "http://127.0.0.1:5000/123/jobs-high",
            "SQS_DOWNLOAD_TASKS_URL": "http://127.0.0.1:5000/123/tasks",
            "SQS_DOWNLOAD_TASKS_HIGH_URL": "http://127.0.0.1:5000/123/tasks-high",
        }
        settings = load_settings(env, Mode.WORKER)
        assert settings.sqs_export_jobs_high_url == env["SQS_EXPORT_JOBS_HIGH_URL"]
        assert settings.sqs_download_tasks_high_url == env["SQS_DOWNLOAD_TASKS_HIGH_URL"]

    def test_token_not_in_repr(self) -> None:
        """The API token never appears in the settings' repr (and so in logs)."""
        settings = load_settings({**BASE, "EXPORT_API_TOKEN": "s3cret"}, Mode.ALL)
        assert settings.export_api_token == "s3cret"
        assert "s3cret" not in repr(settings)


class TestErrors:
    @pytest.mark.parametrize(
        "name", ["SQS_EXPORT_JOBS_URL", "S3_BUCKET_NAME", "EXPORT_API_BASE_URL"]
    )
    def test_required(self, name: str) -> None:
        """A missing required variable is named in one line."""
        env = {k: v for k, v in BASE.items() if k != name}
        with pytest.raises(ConfigError, match=rf"^{name} is required but not set$"):
            load_settings(env, Mode.ALL)

    @pytest.mark.parametrize("mode", [Mode.ORCHESTRATOR, Mode.WORKER])
    def test_download_queue_required_in_split_modes(self, mode: Mode) -> None:
        """Orchestrator and worker modes need SQS_DOWNLOAD_TASKS_URL."""
        with pytest.raises(ConfigError, match=r"^SQS_DOWNLOAD_TASKS_URL is required"):
            load_settings(BASE, mode)

    @pytest.mark.parametrize(
        ("name", "value", "pattern"),
        [
            ("MAX_CONCURRENT_JOBS", "many", "MAX_CONCURRENT_JOBS must be a whole number"),
            ("MAX_CONCURRENT_JOBS", "0", "MAX_CONCURRENT_JOBS must be greater than 0"),
            ("WORKER_POOL_SIZE", "1.5", "WORKER_POOL_SIZE must be a whole number"),
            (
                "EXPORT_POLL_INTERVAL_SECONDS",
                "soon",
                "EXPORT_POLL_INTERVAL_SECONDS must be a number",
            ),
            ("HEALTH_PORT", "70000", "HEALTH_PORT must be a port number"),
            ("LOG_LEVEL", "loud", "LOG_LEVEL must be one of"),
            ("EXPORT_API_BASE_URL", "ftp://x", "EXPORT_API_BASE_URL must be an absolute http"),
            ("EXPORT_DOWNLOAD_ALLOWED_HOSTS", "a b", "EXPORT_DOWNLOAD_ALLOWED_HOSTS: 'a b'"),
            ("SHUTDOWN_GRACE_SECONDS", "-1", "SHUTDOWN_GRACE_SECONDS must not be negative"),
            ("LOG_FORMAT", "xml", "LOG_FORMAT must be one of json, console"),
            (
                "EXPORT_API_RATE_PER_SECOND",
                "0",
                "EXPORT_API_RATE_PER_SECOND must be greater than 0",
            ),
            ("OVERLOAD_BACKLOG", "-5", "OVERLOAD_BACKLOG must not be negative"),
            ("SQS_WAIT_SECONDS", "0", "SQS_WAIT_SECONDS must be 1 to 20 seconds"),
            ("SQS_WAIT_SECONDS", "21", "SQS_WAIT_SECONDS must be 1 to 20 seconds"),
            ("SQS_EXPORT_JOBS_HIGH_URL", "jobs-high", "SQS_EXPORT_JOBS_HIGH_URL must be an"),
            (
                "SQS_DOWNLOAD_TASKS_HIGH_URL",
                "http://127.0.0.1:5000/123/tasks-high",
                "SQS_DOWNLOAD_TASKS_HIGH_URL is set but SQS_DOWNLOAD_TASKS_URL is not",
            ),
        ],
    )
    def test_malformed(self, name: str, value: str, pattern: str) -> None:
        """A malformed value gives one line that names the variable."""
        with pytest.raises(ConfigError, match=pattern) as info:
            load_settings({**BASE, name: value}, Mode.ALL)
        assert "\n" not in str(info.value)

    def test_token_value_never_echoed(self) -> None:
        """Error messages do not repeat secret values."""
        settings = load_settings({**BASE, "EXPORT_API_TOKEN": "  "}, Mode.ALL)
        assert settings.export_api_token is None


class TestResolveMode:
    def test_flag_wins_over_the_environment(self) -> None:
        """--mode, when given, decides whatever SERVICE_MODE says."""
        assert resolve_mode("worker", {"SERVICE_MODE": "orchestrator"}) is Mode.WORKER

    def test_environment_when_no_flag(self) -> None:
        """Without --mode, SERVICE_MODE decides (case and spaces forgiven)."""
        assert resolve_mode(None, {"SERVICE_MODE": " Orchestrator "}) is Mode.ORCHESTRATOR

    def test_all_when_neither(self) -> None:
        """Neither --mode nor SERVICE_MODE (or an empty one) means all."""
        assert resolve_mode(None, {}) is Mode.ALL
        assert resolve_mode(None, {"SERVICE_MODE": ""}) is Mode.ALL

    def test_bad_value_names_the_variable(self) -> None:
        """An unknown SERVICE_MODE is a one-line ConfigError naming it and the choices."""
        with pytest.raises(ConfigError, match=r"SERVICE_MODE must be one of all, orchestrator"):
            resolve_mode(None, {"SERVICE_MODE": "turbo"})


class TestEventsAndRetention:
    def test_defaults_no_events_thirty_days(self) -> None:
        """Unset: no event bus, jobs kept 30 days; 0 days and a bus name or ARN are taken."""
        settings = load_settings(BASE, Mode.ALL)
        assert (settings.event_bus_name, settings.job_retention_days) == (None, 30)
        arn = "arn:aws:events:eu-west-1:123456789012:event-bus/exports"
        for bus in ("exports", arn):
            env = {**BASE, "EVENT_BUS_NAME": bus, "JOB_RETENTION_DAYS": "0"}
            settings = load_settings(env, Mode.ALL)
            assert (settings.event_bus_name, settings.job_retention_days) == (bus, 0)

    @pytest.mark.parametrize(
        ("name", "value", "said"),
        [
            ("JOB_RETENTION_DAYS", "-1", "JOB_RETENTION_DAYS must not be negative"),
            ("JOB_RETENTION_DAYS", "a month", "JOB_RETENTION_DAYS must be a whole number"),
            ("EVENT_BUS_NAME", "my bus", "EVENT_BUS_NAME must be an event bus name or ARN"),
        ],
    )
    def test_bad_values_are_one_line(self, name: str, value: str, said: str) -> None:
        """A bad value stops start-up with one line naming the variable."""
        with pytest.raises(ConfigError, match=said):
            load_settings({**BASE, name: value}, Mode.ALL)
