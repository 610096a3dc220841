"""Holds template.yaml to what operating the stack relies on, beyond what cfn-lint knows.

Run by scripts/cloud-checks with the venv's Python (cfn-lint reads the YAML, short-form tags
and all):

    python scripts/check_template.py [template.yaml] [docs/operations.md]

Asserts that every function has an Errors and a Throttles alarm; that the state machine, the
API, every table and the upload dead-letter queue have theirs; that every alarm publishes to the
alerts topic, treats missing data as not breaching and names a runbook entry that exists in
docs/operations.md; that the alerts topic can take alarms and budget notifications; that X-Ray
tracing is on for functions, state machines and APIs; that the dashboard's body is JSON and names
the application metrics; and that AWS Backup covers every bucket and table hourly. Prints one
line per assertion ("ok" or "FAIL" and why) and exits 1 if any failed.
"""

import json
import re
import sys
from pathlib import Path

try:
    from cfnlint.decode import cfn_yaml
except ImportError:
    sys.exit("check_template.py: needs cfn-lint; run it with the venv's python (bash scripts/setup)")

ALERTS_TOPIC = "AlertsTopic"
STEPS = ["validate", "resize", "filter", "store", "notify"]
EMF_METRICS = ["StepDuration", "ImagesProcessed", "ImagesRejected", "ImagesFailed", "MegapixelsIn", "BytesOut"]
HOURLY = "cron(0 * * * ? *)"
PSEUDO = {"AWS::AccountId", "AWS::Region", "AWS::StackName", "AWS::StackId", "AWS::Partition", "AWS::URLSuffix"}

failures = 0


def report(name, problems):
    """Prints one result line; `problems` is a list of reasons (empty means ok)."""
    global failures
    if problems:
        failures += 1
        print(f"FAIL  {name}")
        for p in problems:
            print(f"        {p}")
    else:
        print(f"ok    {name}")


def ref_name(value):
    """The logical id a {"Ref": X} or {"Fn::GetAtt": ...} names, else None."""
    if isinstance(value, dict) and len(value) == 1:
        (key, arg), = value.items()
        if key == "Ref" and isinstance(arg, str):
            return arg
        if key == "Fn::GetAtt":
            if isinstance(arg, str):
                return arg.split(".", 1)[0]
            if isinstance(arg, list) and arg:
                return arg[0]
    return None


def getatt(value):
    """(resource, attribute) of a Fn::GetAtt, else None."""
    if isinstance(value, dict) and list(value) == ["Fn::GetAtt"]:
        arg = value["Fn::GetAtt"]
        if isinstance(arg, str):
            arg = arg.split(".", 1)
        if isinstance(arg, list) and len(arg) == 2:
            return tuple(arg)
    return None


def text(value):
    """The template text of a plain string or a Fn::Sub's string."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and list(value) == ["Fn::Sub"]:
        arg = value["Fn::Sub"]
        return arg if isinstance(arg, str) else arg[0]
    return None


def alarm_metrics(props):
    """(namespace, metric name, {dimension: value}) of every metric an alarm reads."""
    found = []
    if "MetricName" in props:
        dims = {d["Name"]: d["Value"] for d in props.get("Dimensions", [])}
        found.append((props.get("Namespace"), props["MetricName"], dims))
    for m in props.get("Metrics", []):
        stat = m.get("MetricStat")
        if stat:
            metric = stat["Metric"]
            dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
            found.append((metric.get("Namespace"), metric.get("MetricName"), dims))
    return found


def alarms_on(alarms, namespace, metric, dimension, logical_id):
    """Names of the alarms reading `metric` with `dimension` set to a Ref/GetAtt of `logical_id`."""
    return [
        name
        for name, props in alarms.items()
        for ns, m, dims in alarm_metrics(props)
        if ns == namespace and m == metric and ref_name(dims.get(dimension)) == logical_id
    ]


def github_anchors(markdown):
    """Anchors GitHub gives the headings of a Markdown file, plus explicit <a id=...>."""
    anchors = set(re.findall(r'<a\s+(?:id|name)="([^"]+)"', markdown))
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m and not in_code:
            heading = re.sub(r"[^\w\- ]", "", m.group(1).lower())
            anchors.add(heading.replace(" ", "-"))
    return anchors


def main():
    template_path = Path(sys.argv[1] if len(sys.argv) > 1 else "template.yaml")
    docs_path = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/operations.md")
    t = cfn_yaml.load(str(template_path))
    resources = t.get("Resources", {})
    parameters = t.get("Parameters", {})
    by_type = {}
    for name, res in resources.items():
        by_type.setdefault(res.get("Type"), {})[name] = res
    functions = by_type.get("AWS::Serverless::Function", {})
    machines = by_type.get("AWS::Serverless::StateMachine", {})
    apis = by_type.get("AWS::Serverless::Api", {})
    tables = by_type.get("AWS::DynamoDB::Table", {})
    buckets = by_type.get("AWS::S3::Bucket", {})
    queues = by_type.get("AWS::SQS::Queue", {})
    alarms = {n: r.get("Properties", {}) for n, r in by_type.get("AWS::CloudWatch::Alarm", {}).items()}
    global_fn = t.get("Globals", {}).get("Function", {})

    # Alarms, per thing watched.
    problems = []
    if not functions:
        problems.append("no AWS::Serverless::Function at all")
    for fn in functions:
        for metric in ("Errors", "Throttles"):
            if not alarms_on(alarms, "AWS/Lambda", metric, "FunctionName", fn):
                problems.append(f"{fn}: no alarm on AWS/Lambda {metric}")
    report(f"every function ({len(functions)}) has an Errors and a Throttles alarm", problems)

    problems = []
    if not machines:
        problems.append("no AWS::Serverless::StateMachine at all")
    for sm in machines:
        for metric in ("ExecutionsFailed", "ExecutionsTimedOut", "ExecutionThrottled"):
            if not alarms_on(alarms, "AWS/States", metric, "StateMachineArn", sm):
                problems.append(f"{sm}: no alarm on AWS/States {metric}")
    report("state machine alarms: ExecutionsFailed, ExecutionsTimedOut, ExecutionThrottled", problems)

    problems = []
    api_alarms = [
        props
        for props in alarms.values()
        for ns, m, dims in alarm_metrics(props)
        if ns == "AWS/ApiGateway" and {"ApiName", "Stage"} <= set(dims)
    ]
    for metric in ("5XXError", "Latency"):
        if not any(m == metric for props in api_alarms for _, m, _ in alarm_metrics(props)):
            problems.append(f"no alarm on AWS/ApiGateway {metric} (dimensions ApiName, Stage)")
    latency = [p for p in api_alarms if any(m == "Latency" for _, m, _ in alarm_metrics(p))]
    if latency and not all(p.get("ExtendedStatistic") == "p99" for p in latency):
        problems.append("the API latency alarm is not on ExtendedStatistic p99")
    report("API alarms: 5XXError and Latency p99", problems)

    problems = []
    for table in tables:
        if not (
            alarms_on(alarms, "AWS/DynamoDB", "ReadThrottleEvents", "TableName", table)
            and alarms_on(alarms, "AWS/DynamoDB", "WriteThrottleEvents", "TableName", table)
        ) and not alarms_on(alarms, "AWS/DynamoDB", "ThrottledRequests", "TableName", table):
            problems.append(f"{table}: no alarm on its read and write throttles")
    report(f"every table ({len(tables)}) has a throttles alarm", problems)

    problems = []
    for queue in queues:
        if "DeadLetter" in queue and not alarms_on(
            alarms, "AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", queue
        ):
            problems.append(f"{queue}: no alarm on ApproximateNumberOfMessagesVisible")
    if not any("DeadLetter" in q for q in queues):
        problems.append("no dead-letter queue declared (AWS::SQS::Queue named *DeadLetter*)")
    report("dead-letter queue depth alarm", problems)

    # Every alarm: where it goes, what no data means, where its runbook is.
    anchors = github_anchors(docs_path.read_text()) if docs_path.exists() else set()
    problems = []
    if not docs_path.exists():
        problems.append(f"{docs_path} is missing")
    for name, props in sorted(alarms.items()):
        actions = [ref_name(a) for a in props.get("AlarmActions", [])]
        if ALERTS_TOPIC not in actions:
            problems.append(f"{name}: AlarmActions lacks !Ref {ALERTS_TOPIC}")
        if props.get("TreatMissingData") != "notBreaching":
            problems.append(f"{name}: TreatMissingData is not notBreaching")
        stat = props.get("ExtendedStatistic")
        if stat is not None and not re.fullmatch(r"p\d{1,2}(\.\d+)?", str(stat)):
            problems.append(f"{name}: ExtendedStatistic {stat!r} is no percentile")
        description = text(props.get("AlarmDescription")) or ""
        m = re.search(r"docs/operations\.md#([\w-]+)", description)
        if not m:
            problems.append(f"{name}: AlarmDescription names no docs/operations.md#anchor")
        elif docs_path.exists() and m.group(1) not in anchors:
            problems.append(f"{name}: {docs_path} has no heading for #{m.group(1)}")
    report(f"every alarm ({len(alarms)}) publishes to {ALERTS_TOPIC} and names an existing runbook entry", problems)

    # The alerts topic must be usable by CloudWatch and Budgets: a customer key, a policy.
    problems = []
    topic = resources.get(ALERTS_TOPIC, {}).get("Properties", {})
    key = topic.get("KmsMasterKeyId")
    if key is None:
        problems.append(f"{ALERTS_TOPIC} is not encrypted")
    elif isinstance(key, str):
        problems.append(f"{ALERTS_TOPIC} uses {key}; alarms and budgets need a customer-managed key")
    else:
        key_res = resources.get(ref_name(key), {})
        statements = key_res.get("Properties", {}).get("KeyPolicy", {}).get("Statement", [])
        for service in ("cloudwatch.amazonaws.com", "budgets.amazonaws.com"):
            if not any(s.get("Principal", {}).get("Service") == service for s in statements):
                problems.append(f"the alerts key's policy does not let {service} use it")
        if not key_res.get("Properties", {}).get("EnableKeyRotation"):
            problems.append("the alerts key does not rotate")
    policies = [
        r["Properties"]
        for r in by_type.get("AWS::SNS::TopicPolicy", {}).values()
        if ALERTS_TOPIC in [ref_name(x) for x in r["Properties"].get("Topics", [])]
    ]
    for service in ("cloudwatch.amazonaws.com", "budgets.amazonaws.com"):
        if not any(
            s.get("Principal", {}).get("Service") == service and "aws:SourceAccount" in json.dumps(s.get("Condition", {}))
            for p in policies
            for s in p["PolicyDocument"]["Statement"]
        ):
            problems.append(f"no topic policy lets {service} publish to {ALERTS_TOPIC} (with aws:SourceAccount)")
    for name, res in by_type.get("AWS::Budgets::Budget", {}).items():
        for n in res["Properties"].get("NotificationsWithSubscribers", []):
            if ALERTS_TOPIC not in [ref_name(s.get("Address")) for s in n.get("Subscribers", [])]:
                problems.append(f"{name}: a notification does not go to {ALERTS_TOPIC}")
    if not by_type.get("AWS::Budgets::Budget"):
        problems.append("no AWS::Budgets::Budget")
    report("alerts topic takes alarms and budget notifications", problems)

    # Tracing.
    problems = []
    for fn, res in functions.items():
        tracing = res.get("Properties", {}).get("Tracing", global_fn.get("Tracing"))
        if tracing != "Active":
            problems.append(f"{fn}: Tracing is {tracing!r}, not Active")
    for sm, res in machines.items():
        if res.get("Properties", {}).get("Tracing", {}).get("Enabled") is not True:
            problems.append(f"{sm}: Tracing.Enabled is not true")
    for api, res in apis.items():
        if res.get("Properties", {}).get("TracingEnabled") is not True:
            problems.append(f"{api}: TracingEnabled is not true")
    for stage, res in by_type.get("AWS::ApiGateway::Stage", {}).items():
        if res.get("Properties", {}).get("TracingEnabled") is not True:
            problems.append(f"{stage}: TracingEnabled is not true")
    report("X-Ray tracing on functions, state machines and APIs", problems)

    # Application metrics: the namespace the code reads, a dashboard that graphs them.
    problems = []
    env = global_fn.get("Environment", {}).get("Variables", {})
    if text(env.get("IMGPIPE_METRICS_NAMESPACE")) != "imgpipe/${AWS::StackName}":
        problems.append("Globals.Function.Environment lacks IMGPIPE_METRICS_NAMESPACE: !Sub imgpipe/${AWS::StackName}")
    dashboards = by_type.get("AWS::CloudWatch::Dashboard", {})
    if len(dashboards) != 1:
        problems.append(f"{len(dashboards)} dashboards, want 1")
    for name, res in dashboards.items():
        body = text(res["Properties"].get("DashboardBody"))
        if body is None:
            problems.append(f"{name}: DashboardBody is not a string or !Sub")
            continue
        for var in re.findall(r"\$\{([^}!]+)\}", body):
            base = var.split(".", 1)[0]
            if var not in PSEUDO and base not in resources and base not in parameters:
                problems.append(f"{name}: ${{{var}}} names nothing in the template")
        try:
            widgets = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))["widgets"]
        except (ValueError, KeyError) as e:
            problems.append(f"{name}: DashboardBody is not JSON with widgets: {e}")
            continue
        lines = [
            m
            for w in widgets
            for m in w.get("properties", {}).get("metrics", [])
        ]
        graphed = {(m[0], m[1]) for m in lines if len(m) >= 2 and isinstance(m[0], str)}
        for metric in EMF_METRICS:
            if ("imgpipe/x", metric) not in graphed:
                problems.append(f"{name}: does not graph {metric} in namespace imgpipe/${{AWS::StackName}}")
        step_stats = {
            (m[3], w["properties"].get("stat"))
            for w in widgets
            for m in w.get("properties", {}).get("metrics", [])
            if len(m) >= 4 and m[1] == "StepDuration" and m[2] == "Step"
        }
        for step in STEPS:
            for stat in ("p50", "p99"):
                if (step, stat) not in step_stats:
                    problems.append(f"{name}: no StepDuration {stat} for Step={step}")
    report("dashboard: JSON body, application metrics, StepDuration p50/p99 per step", problems)

    # Backups: every bucket and table, hourly, versioned buckets, retention from the parameter.
    problems = []
    selections = by_type.get("AWS::Backup::BackupSelection", {})
    selected = {
        ref_name(r)
        for res in selections.values()
        for r in res["Properties"]["BackupSelection"].get("Resources", [])
    }
    for name in list(buckets) + list(tables):
        if name not in selected:
            problems.append(f"{name} is in no AWS::Backup::BackupSelection")
    for name, res in buckets.items():
        if res.get("Properties", {}).get("VersioningConfiguration", {}).get("Status") != "Enabled":
            problems.append(f"{name}: versioning is off (AWS Backup for S3 needs it)")
    for name, res in tables.items():
        pitr = res.get("Properties", {}).get("PointInTimeRecoverySpecification", {})
        if pitr.get("PointInTimeRecoveryEnabled") is not True:
            problems.append(f"{name}: point-in-time recovery is off")
    plans = by_type.get("AWS::Backup::BackupPlan", {})
    for res in selections.values():
        if ref_name(res["Properties"].get("BackupPlanId")) not in plans:
            problems.append("a backup selection names no plan of this template")
    rules = [r for p in plans.values() for r in p["Properties"]["BackupPlan"].get("BackupPlanRule", [])]
    if not any(r.get("ScheduleExpression") == HOURLY for r in rules):
        problems.append(f"no backup rule runs {HOURLY}")
    for r in rules:
        if ref_name(r.get("Lifecycle", {}).get("DeleteAfterDays")) != "BackupRetentionDays":
            problems.append(f"rule {r.get('RuleName')}: Lifecycle.DeleteAfterDays is not !Ref BackupRetentionDays")
        if ref_name(r.get("TargetBackupVault")) not in by_type.get("AWS::Backup::BackupVault", {}):
            problems.append(f"rule {r.get('RuleName')}: targets no vault of this template")
    for name, res in by_type.get("AWS::Backup::BackupVault", {}).items():
        if "EncryptionKeyArn" not in res.get("Properties", {}):
            problems.append(f"{name}: no EncryptionKeyArn")
    report("hourly AWS Backup of every bucket and table", problems)

    # The outputs the runbook and README name.
    missing = [o for o in ("DashboardUrl", "BackupVaultName", "BackupPlanId") if o not in t.get("Outputs", {})]
    report("outputs DashboardUrl, BackupVaultName, BackupPlanId", [f"no output {o}" for o in missing])

    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
