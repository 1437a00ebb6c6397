"""Creates an application load balancer for an `alb-weights` test on the moto emulator.

The Rust SDK build carries no EC2 client (its build is large and nothing in Flightdeck calls EC2),
so the load balancer's network (the emulator's default VPC and subnets) is looked up here with
boto3 from the emulator's venv. Prints the ARNs as JSON:
    {"listener_arn", "rule_arn", "blue_target_group_arn", "green_target_group_arn"}
All traffic starts on blue. Usage: alb_fixture.py NAME (at most 20 characters).
"""

import json
import os
import sys

import boto3

# What Flightdeck may change carries this tag (the template's IAM condition; registration
# refuses a listener or rule without it).
MANAGED = [{"Key": "flightdeck:managed", "Value": "true"}]


def main() -> None:
    name = sys.argv[1]
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    if not endpoint.startswith(("http://127.0.0.1", "http://localhost")):
        sys.exit(f"AWS_ENDPOINT_URL={endpoint} is not a local emulator")
    ec2 = boto3.client("ec2", endpoint_url=endpoint)
    elb = boto3.client("elbv2", endpoint_url=endpoint)
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    lb = elb.create_load_balancer(
        Name=name, Subnets=[s["SubnetId"] for s in subnets[:2]], Type="application", Scheme="internal"
    )["LoadBalancers"][0]["LoadBalancerArn"]
    groups = {}
    for colour in ("blue", "green"):
        groups[colour] = elb.create_target_group(
            Name=f"{name}-{colour}"[:32], Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="ip"
        )["TargetGroups"][0]["TargetGroupArn"]
    listener = elb.create_listener(
        LoadBalancerArn=lb,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "404"}}],
        Tags=MANAGED,
    )["Listeners"][0]["ListenerArn"]
    rule = elb.create_rule(
        ListenerArn=listener,
        Tags=MANAGED,
        Priority=10,
        Conditions=[{"Field": "path-pattern", "Values": ["/*"]}],
        Actions=[
            {
                "Type": "forward",
                "ForwardConfig": {
                    "TargetGroups": [
                        {"TargetGroupArn": groups["blue"], "Weight": 100},
                        {"TargetGroupArn": groups["green"], "Weight": 0},
                    ]
                },
            }
        ],
    )["Rules"][0]["RuleArn"]
    print(
        json.dumps(
            {
                "listener_arn": listener,
                "rule_arn": rule,
                "blue_target_group_arn": groups["blue"],
                "green_target_group_arn": groups["green"],
            }
        )
    )


if __name__ == "__main__":
    main()
