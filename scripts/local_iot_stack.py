"""The IoT part of the regional stack (template.yaml), made in moto as
CloudFormation would make it in one region, for local runs and tests:
thing types, thing groups, IoT policies and their attachments are created
through moto's IoT API; the provisioning templates and topic rules, which
moto does not implement, are written to the configuration file
geoprov-iot-emu reads (a rule's Lambda actions by function name: the name its
`--lambda NAME=URL` gives).

    local_iot_stack.py --endpoint URL --region R --out emu.json \
        [--parameter Name=Value ...]

Parameters not given take the template's defaults, and conditions are
evaluated from them, so `--parameter ClaimCertificateId=<id>` makes the
fleet template, the claim policy and its attachment,
`--parameter PcaArn=<arn>` makes the JITR rule, and with it
`--parameter EnableCertificateProvider=true` (or that default) the
certificate provider: created in moto's IoT (the API moto_launcher.py adds)
and named in the configuration as `certificateProvider` (its function by
name, as a rule's are). IoT allows one provider per account: a provider
elsewhere in the account fails the run, as it fails the stack. A resource's physical
name is its name property, else `geoprov-<LogicalId>` (the stack is named
geoprov); a function's ARN ends in its logical id. Prints what it made (JSON).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import boto3
import yaml
from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from template_facts import Loader  # noqa: E402

STACK = "geoprov"
NAME_PROPERTY = {
    "AWS::IoT::ThingType": "ThingTypeName",
    "AWS::IoT::ThingGroup": "ThingGroupName",
    "AWS::IoT::Policy": "PolicyName",
    "AWS::IoT::ProvisioningTemplate": "TemplateName",
    "AWS::IoT::CertificateProvider": "CertificateProviderName",
}
NO_VALUE = object()


class Stack:
    def __init__(self, template: dict, region: str, account: str, given: dict[str, str]):
        self.resources = template.get("Resources", {})
        self.region, self.account = region, account
        self.parameters = {}
        for name, declaration in template.get("Parameters", {}).items():
            value = given.get(name, declaration.get("Default"))
            if value is None:
                raise SystemExit(f"parameter {name} has no value and no default")
            self.parameters[name] = str(value)
        unknown = set(given) - set(self.parameters)
        if unknown:
            raise SystemExit(f"the template declares no parameter {sorted(unknown)}")
        self.condition_definitions = template.get("Conditions", {})
        self.conditions: dict[str, bool] = {}

    def pseudo(self, name):
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::Partition": "aws",
            "AWS::StackName": STACK,
            "AWS::URLSuffix": "amazonaws.com",
        }.get(name)

    def physical_name(self, logical_id):
        resource = self.resources[logical_id]
        prop = NAME_PROPERTY.get(resource["Type"])
        if prop and prop in resource.get("Properties", {}):
            return self.value(resource["Properties"][prop])
        if resource["Type"] == "AWS::Serverless::Function":
            return logical_id
        return f"{STACK}-{logical_id}"

    def attribute(self, logical_id, attribute):
        kind = self.resources[logical_id]["Type"]
        if attribute != "Arn":
            return f"{logical_id}.{attribute}"
        if kind == "AWS::Serverless::Function":
            return f"arn:aws:lambda:{self.region}:{self.account}:function:{logical_id}"
        if kind == "AWS::IAM::Role":
            return f"arn:aws:iam::{self.account}:role/{STACK}-{logical_id}"
        return f"arn:aws:{kind.split('::')[1].lower()}:{self.region}:{self.account}:{logical_id}"

    def condition(self, name):
        if name not in self.conditions:
            self.conditions[name] = bool(self.decide(self.condition_definitions[name]))
        return self.conditions[name]

    def decide(self, value):
        (function, argument), = value.items()
        if function == "Fn::Equals":
            return self.value(argument[0]) == self.value(argument[1])
        if function == "Fn::Not":
            return not self.decide(argument[0])
        if function == "Fn::And":
            return all(self.decide(a) for a in argument)
        if function == "Fn::Or":
            return any(self.decide(a) for a in argument)
        # {"Condition": name} in JSON; template_facts' Loader reads the short
        # tag !Condition as Fn::Condition.
        if function in ("Condition", "Fn::Condition"):
            return self.condition(argument)
        raise SystemExit(f"condition function {function} is not known here")

    def sub(self, text, variables):
        out, rest = [], text
        while "${" in rest:
            start = rest.index("${")
            end = rest.index("}", start)
            out.append(rest[:start])
            name = rest[start + 2:end]
            if name.startswith("!"):
                out.append("${" + name[1:] + "}")
            elif name in variables:
                out.append(str(self.value(variables[name])))
            elif "." in name:
                logical_id, attribute = name.split(".", 1)
                out.append(self.attribute(logical_id, attribute))
            else:
                out.append(str(self.ref(name)))
            rest = rest[end + 1:]
        out.append(rest)
        return "".join(out)

    def ref(self, name):
        if name in self.parameters:
            return self.parameters[name]
        if name == "AWS::NoValue":
            return NO_VALUE
        pseudo = self.pseudo(name)
        if pseudo is not None:
            return pseudo
        if name in self.resources:
            return self.physical_name(name)
        raise SystemExit(f"Ref {name}: no such parameter or resource")

    def value(self, value):
        if isinstance(value, dict) and len(value) == 1:
            (function, argument), = value.items()
            if function == "Ref":
                return self.ref(argument)
            if function == "Fn::Sub":
                text, variables = (argument, {}) if isinstance(argument, str) else argument
                return self.sub(text, variables)
            if function == "Fn::GetAtt":
                return self.attribute(*argument)
            if function == "Fn::If":
                name, yes, no = argument
                return self.value(yes if self.condition(name) else no)
            if function == "Fn::Join":
                return argument[0].join(str(self.value(v)) for v in self.value(argument[1]))
            if function == "Fn::Split":
                return self.value(argument[1]).split(argument[0])
            if function == "Fn::Select":
                return self.value(argument[1])[int(self.value(argument[0]))]
        if isinstance(value, dict):
            resolved = {k: self.value(v) for k, v in value.items()}
            return {k: v for k, v in resolved.items() if v is not NO_VALUE}
        if isinstance(value, list):
            return [v for v in (self.value(v) for v in value) if v is not NO_VALUE]
        return value

    def made(self, kind):
        """(logical id, resolved properties) of each resource of `kind` whose
        condition holds."""
        for logical_id, resource in self.resources.items():
            if resource["Type"] != kind:
                continue
            if "Condition" in resource and not self.condition(resource["Condition"]):
                continue
            yield logical_id, self.value(resource.get("Properties", {}))


def create_unless_exists(create, **kwargs) -> None:
    """Calls an IoT Create* API; a resource that exists already is left as it is."""
    try:
        create(**kwargs)
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("ResourceAlreadyExistsException", "ResourceAlreadyExists"):
            raise


def function_name(arn: str) -> str:
    """The name the emulator's `--lambda NAME=URL` gives a function: the
    last part of its ARN (here, its logical id)."""
    return arn.rsplit(":", 1)[1]


def certificate_providers(stack: Stack, iot) -> list[dict]:
    """Creates the stack's certificate provider (at most one) unless it
    exists; its entry for the emulator's configuration."""
    entries = []
    for logical_id, props in stack.made("AWS::IoT::CertificateProvider"):
        name = stack.physical_name(logical_id)
        try:
            iot.create_certificate_provider(
                certificateProviderName=name,
                lambdaFunctionArn=props["LambdaFunctionArn"],
                accountDefaultForOperations=props["AccountDefaultForOperations"],
            )
        except ClientError as e:
            code = e.response["Error"]["Code"]
            if code == "LimitExceededException":
                # The stack would fail the same way: "You can only create one
                # certificate provider per AWS account".
                raise SystemExit(
                    f"certificate provider {name}: {e.response['Error']['Message']} "
                    "Deploy this region with --parameter EnableCertificateProvider=false, "
                    "or delete the other provider."
                ) from e
            if code not in ("ResourceAlreadyExistsException", "ResourceAlreadyExists"):
                raise
        entries.append(
            {
                "certificateProviderName": name,
                "functionName": function_name(props["LambdaFunctionArn"]),
                "accountDefaultForOperations": list(props["AccountDefaultForOperations"]),
            }
        )
    if len(entries) > 1:
        raise SystemExit("the template declares more than one certificate provider")
    return entries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", default=str(Path(__file__).resolve().parent.parent / "template.yaml"))
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--account-id", default="123456789012")
    parser.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--out", required=True, help="the emulator's configuration file")
    args = parser.parse_args()
    given = dict(p.split("=", 1) for p in args.parameter)
    template = yaml.load(Path(args.template).read_text(), Loader=Loader)
    stack = Stack(template, args.region, args.account_id, given)
    iot = boto3.client("iot", region_name=args.region, endpoint_url=args.endpoint)
    made = {"thingTypes": [], "thingGroups": [], "policies": [], "attachments": [], "templates": [], "rules": [],
            "certificateProviders": []}
    for logical_id, props in stack.made("AWS::IoT::ThingType"):
        name = stack.physical_name(logical_id)
        kwargs = {"thingTypeName": name}
        type_props = props.get("ThingTypeProperties") or {}
        if type_props:
            kwargs["thingTypeProperties"] = {
                "thingTypeDescription": type_props.get("ThingTypeDescription", ""),
                "searchableAttributes": type_props.get("SearchableAttributes", []),
            }
        create_unless_exists(iot.create_thing_type, **kwargs)
        made["thingTypes"].append(name)
    for logical_id, props in stack.made("AWS::IoT::ThingGroup"):
        name = stack.physical_name(logical_id)
        create_unless_exists(iot.create_thing_group, thingGroupName=name)
        made["thingGroups"].append(name)
    for logical_id, props in stack.made("AWS::IoT::Policy"):
        name = stack.physical_name(logical_id)
        create_unless_exists(iot.create_policy, policyName=name, policyDocument=json.dumps(props["PolicyDocument"]))
        made["policies"].append(name)
    for logical_id, props in stack.made("AWS::IoT::PolicyPrincipalAttachment"):
        iot.attach_policy(policyName=props["PolicyName"], target=props["Principal"])
        made["attachments"].append({"policy": props["PolicyName"], "principal": props["Principal"]})
    templates = []
    for logical_id, props in stack.made("AWS::IoT::ProvisioningTemplate"):
        entry = {
            "templateName": props["TemplateName"],
            "templateType": props.get("TemplateType", "FLEET_PROVISIONING"),
            "enabled": bool(props.get("Enabled", False)),
            "templateBody": props["TemplateBody"],
        }
        hook = props.get("PreProvisioningHook")
        if hook:
            entry["preProvisioningHook"] = {
                "targetArn": hook["TargetArn"],
                "payloadVersion": hook.get("PayloadVersion", "2020-04-01"),
            }
        templates.append(entry)
        made["templates"].append(props["TemplateName"])
    rules = []
    for logical_id, props in stack.made("AWS::IoT::TopicRule"):
        payload = props["TopicRulePayload"]
        if payload.get("RuleDisabled"):
            continue
        functions = [
            function_name(action["Lambda"]["FunctionArn"])
            for action in payload.get("Actions", [])
            if "Lambda" in action
        ]
        rules.append({"ruleName": logical_id, "sql": payload["Sql"], "functions": functions})
        made["rules"].append(logical_id)
    config = {"templates": templates, "rules": rules}
    providers = certificate_providers(stack, iot)
    if providers:
        config["certificateProvider"] = providers[0]
        made["certificateProviders"] = [p["certificateProviderName"] for p in providers]
    Path(args.out).write_text(json.dumps(config, indent=2))
    print(json.dumps(made))
    return 0


if __name__ == "__main__":
    sys.exit(main())
