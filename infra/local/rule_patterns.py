"""Every EventBridge rule pattern in infra/template.yaml against every EventBridge sample in
events/, through the emulator's TestEventPattern (ministack). Prints the sample x rule table and
fails unless each sample matches exactly the rules meant for it.

Run with the local stack up (AWS_ENDPOINT_URL_EVENTBRIDGE from .local/env).
"""

import json
import os
import pathlib
import sys

import boto3
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Which rule each sample is meant for (by file-name prefix); anything else must match nothing.
MEANT_FOR = {
    "ecr-image-push": "OnImagePushFunction.EcrPush",
    "ecr-image-scan": "OnImagePushFunction.EcrBasicScan",
    "inspector2-scan": "OnImagePushFunction.EnhancedScan",
    "ecs-": "OnEcsEventFunction.EcsEvents",
    "cloudwatch-alarm-": "OnAlarmFunction.AlarmStateChange",
}
# Well-formed events that no rule should take.
MEANT_FOR_NOTHING = {"ecr-image-delete.json", "scheduled-event.json"}


class Loader(yaml.SafeLoader):
    pass


Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


def rules():
    template = yaml.load((ROOT / "infra/template.yaml").read_text(), Loader=Loader)
    for name, resource in template["Resources"].items():
        for event_name, event in (resource.get("Properties") or {}).get("Events", {}).items():
            if event.get("Type") == "EventBridgeRule":
                yield f"{name}.{event_name}", event["Properties"]["Pattern"]


def samples():
    for path in sorted((ROOT / "events").glob("*.json")):
        event = json.loads(path.read_text())
        if "detail-type" in event and "source" in event:
            yield path.name, event


def expected(sample_name):
    if sample_name in MEANT_FOR_NOTHING:
        return None
    for prefix, rule in MEANT_FOR.items():
        if sample_name.startswith(prefix):
            return rule
    return None


def main() -> int:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_EVENTBRIDGE")
    if not endpoint or not endpoint.startswith("http://127.0.0.1"):
        sys.exit("AWS_ENDPOINT_URL_EVENTBRIDGE must point at the local ministack (source .local/env)")
    events = boto3.client("events", endpoint_url=endpoint)
    all_rules = list(rules())
    names = [n.split(".")[1] for n, _ in all_rules]
    width = max(len(s) for s, _ in samples())
    print(f"{'sample':<{width}}  " + "  ".join(f"{n:<16}" for n in names) + "  verdict")
    wrong = 0
    count = 0
    for sample_name, event in samples():
        cells = []
        ok = True
        for rule_name, pattern in all_rules:
            matched = events.test_event_pattern(EventPattern=json.dumps(pattern), Event=json.dumps(event))["Result"]
            meant = expected(sample_name) == rule_name
            ok &= matched == meant
            cells.append(f"{'match' if matched else '-':<16}")
            count += 1
        wrong += not ok
        print(f"{sample_name:<{width}}  " + "  ".join(cells) + ("  as intended" if ok else "  WRONG"))
    samples_n = len(list(samples()))
    print(f"rule patterns: {samples_n} samples x {len(all_rules)} rules = {count} checks; {wrong} samples wrong")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
