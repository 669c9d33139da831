"""The deployment: a CloudFormation template cfn-lint accepts, holding what the service needs."""

from __future__ import annotations

import ast
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import yaml
from botocore import xform_name

from tests.support.tools import installed_tool

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "pipeline.yaml"
# The IAM action an API operation needs, where it is not the operation's own name.
IAM_ACTION_OF = {
    "sqs:SendMessageBatch": ["sqs:SendMessage"],
    "sqs:DeleteMessageBatch": ["sqs:DeleteMessage"],
    "sqs:ChangeMessageVisibilityBatch": ["sqs:ChangeMessageVisibility"],
    "s3:HeadBucket": ["s3:ListBucket"],
    "s3:HeadObject": ["s3:GetObject"],
    "s3:CreateMultipartUpload": ["s3:PutObject"],
    "s3:UploadPart": ["s3:PutObject"],
    "s3:CompleteMultipartUpload": ["s3:PutObject"],
    "s3:CopyObject": ["s3:GetObject", "s3:PutObject"],
    "s3:ListMultipartUploads": ["s3:ListBucketMultipartUploads"],
    # A transaction has no action of its own: each of its items needs its own.
    "dynamodb:TransactWriteItems": [
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:ConditionCheckItem",
    ],
}


class _CloudFormationLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (``!Ref x``, ``!GetAtt a.b``, ``!If [...]``)."""


def _intrinsic(loader: yaml.SafeLoader, tag: str, node: yaml.Node) -> dict[str, Any]:
    """A short-form tag as CloudFormation reads it: ``{"Ref": ...}`` or ``{"Fn::<tag>": ...}``."""
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag == "GetAtt":  # "Resource.Attribute" is the two-item list
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref" if tag == "Ref" else f"Fn::{tag}": value}


_CloudFormationLoader.add_multi_constructor("!", _intrinsic)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    """The template, parsed as CloudFormation reads it (intrinsic tags included).

    A YAML loader of its own rather than cfn-lint's ``decode``: importing
    cfn-lint costs 0.9 CPU-s, paid by every xdist worker that ran one of these
    tests; ``test_cfn_lint_passes`` runs cfn-lint itself on the template.
    """
    parsed = yaml.load(TEMPLATE.read_text(), Loader=_CloudFormationLoader)
    assert isinstance(parsed, dict)
    return parsed


def branches(item: Any) -> list[Any]:
    """What a list item may become: both sides of an ``Fn::If``, nothing for ``AWS::NoValue``."""
    if isinstance(item, dict) and "Fn::If" in item:
        _, when_true, when_false = item["Fn::If"]
        return branches(when_true) + branches(when_false)
    if item == {"Ref": "AWS::NoValue"}:
        return []
    return [item]


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """The template's resources of one type, by logical ID."""
    return {
        name: resource.get("Properties", {})
        for name, resource in template["Resources"].items()
        if resource["Type"] == kind
    }


def test_cfn_lint_passes() -> None:
    """cfn-lint finds nothing to say about the template (errors, warnings or information)."""
    done = subprocess.run(
        [installed_tool("cfn-lint"), str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_parameterised_by_image_and_network(template: dict[str, Any]) -> None:
    """Image URI, VPC and subnets are parameters, as are the worker minimum and maximum."""
    parameters = template["Parameters"]
    assert parameters["VpcId"]["Type"] == "AWS::EC2::VPC::Id"
    assert parameters["SubnetIds"]["Type"] == "List<AWS::EC2::Subnet::Id>"
    for name in ("ImageUri", "WorkerMinTasks", "WorkerMaxTasks"):
        assert name in parameters


def test_queues_have_dead_letter_queues(template: dict[str, Any]) -> None:
    """The work queues of both lanes redrive after 3 receives into a DLQ that keeps
    messages 14 days."""
    queues = resources(template, "AWS::SQS::Queue")
    redriven = {name: props for name, props in queues.items() if "RedrivePolicy" in props}
    assert set(redriven) == {
        "ExportJobsQueue",
        "DownloadTasksQueue",
        "ExportJobsHighQueue",
        "DownloadTasksHighQueue",
    }
    for props in redriven.values():
        assert props["RedrivePolicy"]["maxReceiveCount"] == 3
        assert props["VisibilityTimeout"] == {"Ref": "VisibilityTimeoutSeconds"}
        dead_letters = props["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        assert queues[dead_letters]["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_tables_on_demand_with_point_in_time_recovery(template: dict[str, Any]) -> None:
    """The metadata and jobs tables have the contract's keys, on-demand, with PITR."""
    tables = resources(template, "AWS::DynamoDB::Table")
    keys = {
        name: [(k["AttributeName"], k["KeyType"]) for k in props["KeySchema"]]
        for name, props in tables.items()
    }
    assert keys == {
        "MetadataTable": [("exportId", "HASH"), ("path", "RANGE")],
        "JobsTable": [("pk", "HASH"), ("sk", "RANGE")],
    }
    for props in tables.values():
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def test_job_items_expire_by_ttl(template: dict[str, Any]) -> None:
    """The jobs table's TTL is on expiresAt, and JOB_RETENTION_DAYS comes from a
    parameter (default 30, 0 allowed) in both task definitions."""
    tables = resources(template, "AWS::DynamoDB::Table")
    assert tables["JobsTable"]["TimeToLiveSpecification"] == {
        "AttributeName": "expiresAt",
        "Enabled": True,
    }
    assert "TimeToLiveSpecification" not in tables["MetadataTable"]
    parameter = template["Parameters"]["JobRetentionDays"]
    assert (int(parameter["Default"]), int(parameter["MinValue"])) == (30, 0)
    for env in _environments(template).values():
        assert env["JOB_RETENTION_DAYS"] == {"Ref": "JobRetentionDays"}


def test_exported_objects_live_as_long_as_the_operator_says(template: dict[str, Any]) -> None:
    """An expiry rule on the bucket exists only when ExportRetentionDays is not 0 (the
    default: for ever), and then expires objects after that many days."""
    parameter = template["Parameters"]["ExportRetentionDays"]
    assert int(parameter["Default"]) == 0
    assert template["Conditions"]["ExportsExpire"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "ExportRetentionDays"}, 0]}]
    }
    (bucket,) = resources(template, "AWS::S3::Bucket").values()
    (conditional,) = [r for r in bucket["LifecycleConfiguration"]["Rules"] if "Fn::If" in r]
    condition, rule, otherwise = conditional["Fn::If"]
    assert (condition, otherwise) == ("ExportsExpire", {"Ref": "AWS::NoValue"})
    assert rule["ExpirationInDays"] == {"Ref": "ExportRetentionDays"}
    assert "Prefix" not in rule


def test_bucket_is_private_encrypted_versioned_and_cleans_uploads(
    template: dict[str, Any],
) -> None:
    """Encryption, public access blocked, versioning, abort incomplete uploads after a day."""
    (bucket,) = resources(template, "AWS::S3::Bucket").values()
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    aborts = [
        rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
        for rule in bucket["LifecycleConfiguration"]["Rules"]
        if "AbortIncompleteMultipartUpload" in rule
    ]
    assert aborts == [1]


def _environments(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each task definition's container environment, by logical ID."""
    found = {}
    for name, definition in resources(template, "AWS::ECS::TaskDefinition").items():
        (container,) = definition["ContainerDefinitions"]
        found[name] = {pair["Name"]: pair["Value"] for pair in container["Environment"]}
    return found


def test_both_services_know_both_lanes_and_the_bus(template: dict[str, Any]) -> None:
    """Both task definitions get the high queues' URLs and the event bus's name."""
    bus = {"Fn::If": ["OwnEventBus", {"Ref": "EventBus"}, {"Ref": "EventBusName"}]}
    for env in _environments(template).values():
        assert env["SQS_EXPORT_JOBS_HIGH_URL"] == {"Ref": "ExportJobsHighQueue"}
        assert env["SQS_DOWNLOAD_TASKS_HIGH_URL"] == {"Ref": "DownloadTasksHighQueue"}
        assert env["EVENT_BUS_NAME"] == bus


def test_services_and_task_definitions(template: dict[str, Any]) -> None:
    """Orchestrator on Fargate, workers Spot first; each sets its mode, stops late enough,
    checks /health and logs to CloudWatch."""
    services = resources(template, "AWS::ECS::Service")
    orchestrator = services["OrchestratorService"]["CapacityProviderStrategy"]
    assert [s["CapacityProvider"] for s in orchestrator] == ["FARGATE"]
    worker = {
        s["CapacityProvider"]: s for s in services["WorkerService"]["CapacityProviderStrategy"]
    }
    assert worker["FARGATE_SPOT"]["Weight"] > worker["FARGATE"]["Weight"]
    grace_max = template["Parameters"]["ShutdownGraceSeconds"]["MaxValue"]
    modes = set()
    for definition in resources(template, "AWS::ECS::TaskDefinition").values():
        (container,) = definition["ContainerDefinitions"]
        env = {pair["Name"]: pair["Value"] for pair in container["Environment"]}
        modes.add(env["SERVICE_MODE"])
        assert container["StopTimeout"] > grace_max
        assert "/health" in " ".join(container["HealthCheck"]["Command"])
        assert container["LogConfiguration"]["LogDriver"] == "awslogs"
        secrets = {s["Name"] for item in container["Secrets"] for s in branches(item)}
        assert secrets == {"EXPORT_API_TOKEN", "ADMIN_TOKEN"}
    assert modes == {"orchestrator", "worker"}


def test_scaling_target_leaves_full_tasks_running(template: dict[str, Any]) -> None:
    """By default the backlog target is at most the files one task holds, so busy tasks stay."""
    parameters = template["Parameters"]
    target = parameters["WorkerBacklogPerTask"]["Default"]
    assert int(target) <= int(parameters["MaxConcurrentJobs"]["Default"])


def test_workers_scale_on_backlog_per_task(template: dict[str, Any]) -> None:
    """A target-tracking policy on queue backlog divided by running tasks, min/max parameters."""
    (target,) = resources(template, "AWS::ApplicationAutoScaling::ScalableTarget").values()
    assert target["MinCapacity"] == {"Ref": "WorkerMinTasks"}
    assert target["MaxCapacity"] == {"Ref": "WorkerMaxTasks"}
    (policy,) = resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
    metrics = policy["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]
    (expression,) = [m["Expression"] for m in metrics["Metrics"] if m.get("ReturnData")]
    assert "/" in expression
    assert "tasks" in expression
    # Both lanes' backlogs: every queue metric in the expression, each on a task queue.
    watched = {
        m["Id"]: m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for m in metrics["Metrics"]
        if "MetricStat" in m and m["MetricStat"]["Metric"]["Namespace"] == "AWS/SQS"
    }
    assert set(watched.values()) == {"DownloadTasksQueue", "DownloadTasksHighQueue"}
    assert all(metric_id in expression for metric_id in watched)


def _iam_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, role in resources(template, "AWS::IAM::Role").items():
        for policy in role.get("Policies", []):
            for item in policy["PolicyDocument"]["Statement"]:
                for statement in branches(item):
                    yield name, statement


def test_task_roles_name_actions_and_resources(template: dict[str, Any]) -> None:
    """Every allowed IAM action is named (no wildcard) and bound to named resources."""
    statements = list(_iam_statements(template))
    assert {name for name, _ in statements} >= {"OrchestratorTaskRole", "WorkerTaskRole"}
    for name, statement in statements:
        assert statement["Effect"] == "Allow", name
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        assert all("*" not in action for action in actions), (name, actions)
        assert statement["Resource"] != "*", (name, statement)


def _granted(template: dict[str, Any], role: str, action: str) -> set[str]:
    """Logical IDs of the resources on which ``role`` may take ``action`` (``GetAtt`` ones)."""
    granted: set[str] = set()
    for name, statement in _iam_statements(template):
        actions = statement["Action"]
        if name != role or action not in (actions if isinstance(actions, list) else [actions]):
            continue
        targets = statement["Resource"]
        for target in targets if isinstance(targets, list) else [targets]:
            if isinstance(target, dict) and "Fn::GetAtt" in target:
                granted.add(target["Fn::GetAtt"][0])
    return granted


def test_every_role_reads_every_queue_depth(template: dict[str, Any]) -> None:
    """Both roles may read the attributes of all four queues (/ready and GET /queues)."""
    queues = set(resources(template, "AWS::SQS::Queue"))
    for role in ("OrchestratorTaskRole", "WorkerTaskRole"):
        assert _granted(template, role, "sqs:GetQueueAttributes") == queues


def test_each_role_consumes_only_its_own_queue(template: dict[str, Any]) -> None:
    """The orchestrator receives export jobs, the worker download tasks (of both lanes),
    and nothing else."""
    assert _granted(template, "OrchestratorTaskRole", "sqs:ReceiveMessage") == {
        "ExportJobsQueue",
        "ExportJobsHighQueue",
    }
    assert _granted(template, "WorkerTaskRole", "sqs:ReceiveMessage") == {
        "DownloadTasksQueue",
        "DownloadTasksHighQueue",
    }
    assert _granted(template, "OrchestratorTaskRole", "s3:PutObject") == set()


def test_events_go_to_one_bus_only(template: dict[str, Any]) -> None:
    """Each task role may put events, on the configured bus (or the stack's own) and
    nowhere else; no other events action is granted."""
    own_or_named = {
        "Fn::If": [
            "OwnEventBus",
            {"Fn::GetAtt": ["EventBus", "Arn"]},
            {
                "Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}"
                ":event-bus/${EventBusName}"
            },
        ]
    }
    assert template["Resources"]["EventBus"]["Condition"] == "OwnEventBus"
    for role in ("OrchestratorTaskRole", "WorkerTaskRole"):
        granted = [
            statement
            for name, statement in _iam_statements(template)
            if name == role and any(str(a).startswith("events:") for a in _actions(statement))
        ]
        assert [(_actions(s), s["Resource"]) for s in granted] == [
            (["events:PutEvents"], own_or_named)
        ]


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return actions if isinstance(actions, list) else [actions]


def test_alarms_watch_dead_letters_age_and_maximum(template: dict[str, Any]) -> None:
    """Alarms: a DLQ not empty (each of the four), the age of the oldest message, the
    workers at their maximum."""
    alarms = resources(template, "AWS::CloudWatch::Alarm").values()
    dead_letter_queues = {
        name
        for name, props in resources(template, "AWS::SQS::Queue").items()
        if "RedrivePolicy" not in props
    }
    alarmed = {
        alarm["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for alarm in alarms
        if alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    }
    assert alarmed == dead_letter_queues
    assert len(dead_letter_queues) == 4
    watched = {alarm["MetricName"] for alarm in alarms}
    assert watched == {
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
        "RunningTaskCount",
    }


def _operations_the_service_calls(*only: str) -> dict[str, str]:
    """IAM actions of every SQS, S3, DynamoDB and EventBridge operation the running
    service names.

    Found in the source (``pipeline/`` minus ``ops/``, run by operators, and
    ``testing/``; or only the modules named in ``only``) as attributes named
    like a botocore operation, so a call added later is seen without this
    test changing.
    """
    session = botocore.session.get_session()
    operations: dict[str, list[str]] = {}
    for service in ("sqs", "s3", "dynamodb", "events"):
        for operation in session.get_service_model(service).operation_names:
            operations.setdefault(xform_name(operation), []).append(f"{service}:{operation}")
    called: dict[str, str] = {}
    package = ROOT / "pipeline"
    for module in package.rglob("*.py"):
        if module.relative_to(package).parts[0] in ("ops", "testing"):
            continue
        if only and module.name not in only:
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in operations:
                for operation in operations[node.attr]:
                    for action in IAM_ACTION_OF.get(operation, [operation]):
                        called[action] = f"{node.attr} in {module.relative_to(ROOT)}"
    return called


def test_task_roles_allow_every_call_the_service_makes(template: dict[str, Any]) -> None:
    """Each AWS operation named in the service's code is allowed to a task role."""
    called = _operations_the_service_calls()
    assert "sqs:ReceiveMessage" in called
    allowed: set[str] = set()
    for _, statement in _iam_statements(template):
        actions = statement["Action"]
        allowed.update(actions if isinstance(actions, list) else [actions])
    missing = {action: where for action, where in called.items() if action not in allowed}
    assert not missing, f"the service calls these, no task role allows them: {missing}"


def test_both_roles_may_make_the_job_and_metadata_calls_on_their_tables(
    template: dict[str, Any],
) -> None:
    """Orchestrators and workers both record files, read job states and metadata: every
    DynamoDB call of those modules is granted to both roles on the right table."""
    tables = {
        "JobsTable": ("jobstore.py", "jobcontrol.py", "jobresults.py"),
        "MetadataTable": ("metadata.py",),
    }
    for table, modules in tables.items():
        calls = _operations_the_service_calls(*modules)
        actions = {action for action in calls if action.startswith("dynamodb:")}
        assert actions, modules
        for role in ("OrchestratorTaskRole", "WorkerTaskRole"):
            denied = {a for a in actions if table not in _granted(template, role, a)}
            assert not denied, f"{role} may not {sorted(denied)} on {table}"
