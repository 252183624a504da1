"""Facts of the SAM templates for the tests, as JSON on stdout.

    template_facts.py [TEMPLATE ...]    (default: template.yaml global.yaml)

The facts of every template given are merged: functions are keyed by binary
and provisioning templates by logical id, each unique across the templates.

- "templates": the file names read, in order;
- "actions": for each function (by its BuildProperties.Binary), every IAM
  action its policies may grant (both ways of every Fn::If);
- "provisioningTemplates": the provisioning template bodies (the fleet
  template and the JITP registration template) with their !Sub variables
  filled in, as JSON text;
- "environment": for each function, the names of its environment variables;
- "healthResources": every Route 53 health check and CloudWatch alarm, with
  its logical id as written (for one made by Fn::ForEach, the key with its
  placeholders) and the loops that make it: identifier, collection, and the
  collection parameter's Type and AllowedPattern;
- "policyStatements": how many policy statements were checked, summed over
  every combination of the template's conditions;
- "policyProblems": each statement, under some combination of conditions
  (each condition taken true and false, independently), whose Resource is
  missing, empty or holds an empty string; and each policy left with no
  statement. Empty when all is well.

CloudFormation's short tags (!Ref, !Sub, ...) are read as {"Fn::X": value}.
"""
import itertools
import json
import os
import sys

import yaml


class Loader(yaml.SafeLoader):
    pass


def _tag(loader, tag_suffix, node):
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


Loader.add_multi_constructor("!", _tag)

FOREACH = "Fn::ForEach::"
NO_VALUE = {"Ref": "AWS::NoValue"}
HEALTH_TYPES = ("AWS::Route53::HealthCheck", "AWS::CloudWatch::Alarm")


class Removed:
    """What {"Ref": "AWS::NoValue"} resolves to: the key or item goes."""


REMOVED = Removed()


def is_if(value):
    return isinstance(value, dict) and len(value) == 1 and "Fn::If" in value


def statements_of(document):
    statement = document.get("Statement", []) if isinstance(document, dict) else []
    return statement if isinstance(statement, list) else [statement]


def every_branch(value):
    """Every statement a (possibly Fn::If) statement can be, NoValue dropped."""
    if is_if(value):
        _, yes, no = value["Fn::If"]
        return every_branch(yes) + every_branch(no)
    if value == NO_VALUE:
        return []
    return [value]


def policy_documents(kind, properties):
    """(name, document) of every inline policy of a resource, unresolved."""
    if kind == "AWS::Serverless::Function":
        for i, policy in enumerate(properties.get("Policies") or []):
            yield f"Policies[{i}]", policy
    elif kind == "AWS::IAM::Role":
        for i, policy in enumerate(properties.get("Policies") or []):
            if isinstance(policy, dict):
                yield f"Policies[{i}]", policy.get("PolicyDocument")
    elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IoT::Policy"):
        yield "PolicyDocument", properties.get("PolicyDocument")


def actions_of(policies):
    granted = set()
    for policy in policies or []:
        for document in every_branch(policy):
            for statement in statements_of(document):
                for branch in every_branch(statement):
                    if not isinstance(branch, dict) or branch.get("Effect") != "Allow":
                        continue
                    action = branch.get("Action", [])
                    granted.update([action] if isinstance(action, str) else action)
    return sorted(granted)


def sub_text(value):
    """The text of a !Sub whose variables are filled with placeholders."""
    sub = value["Fn::Sub"]
    text, variables = (sub, {}) if isinstance(sub, str) else (sub[0], sub[1])
    for name in variables:
        text = text.replace("${" + name + "}", f"geoprov-{name}")
    return text


def resolve(value, conditions):
    """value with every Fn::If decided by `conditions` and NoValue removed."""
    if is_if(value):
        name, yes, no = value["Fn::If"]
        return resolve(yes if conditions[name] else no, conditions)
    if value == NO_VALUE:
        return REMOVED
    if isinstance(value, dict):
        resolved = {k: resolve(v, conditions) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not REMOVED}
    if isinstance(value, list):
        resolved = [resolve(v, conditions) for v in value]
        return [v for v in resolved if v is not REMOVED]
    return value


def render(value):
    """A resolved Resource entry as the text it stands for; "" when empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (name, argument), = value.items()
        if name == "Ref":
            return "${" + str(argument) + "}"
        if name == "Fn::GetAtt":
            return "${" + ".".join(map(str, argument)) + "}"
        if name == "Fn::Sub":
            if isinstance(argument, str):
                return argument
            text, variables = argument[0], argument[1]
            for key, variable in variables.items():
                text = text.replace("${" + key + "}", render(variable))
            return text
        if name == "Fn::Join":
            separator, items = argument
            if isinstance(items, list):
                return separator.join(render(item) for item in items)
    if value in ([], {}, None):
        return ""
    return json.dumps(value, sort_keys=True)


def statement_problems(where, statement):
    if not isinstance(statement, dict):
        return [f"{where}: a statement that is not an object: {statement!r}"]
    if "NotResource" in statement and "Resource" not in statement:
        resources = statement["NotResource"]
    elif "Resource" in statement:
        resources = statement["Resource"]
    else:
        return [f"{where}: no Resource"]
    resources = resources if isinstance(resources, list) else [resources]
    if not resources:
        return [f"{where}: Resource is an empty list"]
    return [
        f"{where}: Resource {json.dumps(resource, sort_keys=True)} is empty"
        for resource in resources
        if not render(resource).strip()
    ]


def check_policies(label, template, facts):
    conditions = sorted(template.get("Conditions") or {})
    resources = {
        k: v for k, v in (template.get("Resources") or {}).items() if not k.startswith(FOREACH)
    }
    for values in itertools.product([True, False], repeat=len(conditions)):
        combination = dict(zip(conditions, values))
        named = ",".join(f"{c}={'true' if v else 'false'}" for c, v in combination.items())
        for logical_id, resource in resources.items():
            properties = resource.get("Properties") or {}
            for name, document in policy_documents(resource.get("Type"), properties):
                document = resolve(document, combination)
                if document is REMOVED or not isinstance(document, dict):
                    continue  # a managed policy name, a SAM policy template, or none
                if "Statement" not in document:
                    continue  # a SAM policy template such as {"DynamoDBCrudPolicy": ...}
                statements = statements_of(document)
                where = f"{label} {logical_id}.{name} under [{named or 'no conditions'}]"
                if not statements:
                    facts["policyProblems"].append(f"{where}: no statement")
                for i, statement in enumerate(statements):
                    facts["policyStatements"] += 1
                    sid = statement.get("Sid", i) if isinstance(statement, dict) else i
                    facts["policyProblems"].extend(
                        statement_problems(f"{where} statement {sid}", statement)
                    )


def health_resources(label, template, section, loops=()):
    """Health checks and alarms, through any Fn::ForEach, with their loops."""
    found = []
    for key, value in section.items():
        if key.startswith(FOREACH):
            identifier, collection, body = value
            loop = {"identifier": identifier, "collection": collection}
            if isinstance(collection, dict) and "Ref" in collection:
                parameter = (template.get("Parameters") or {}).get(collection["Ref"], {})
                loop["parameterType"] = parameter.get("Type")
                loop["allowedPattern"] = parameter.get("AllowedPattern")
            found += health_resources(label, template, body, loops + (loop,))
        elif isinstance(value, dict) and value.get("Type") in HEALTH_TYPES:
            found.append(
                {"template": label, "logicalId": key, "type": value["Type"], "loops": list(loops)}
            )
    return found


def merge_unique(facts, section, key, value, label):
    if key in facts[section]:
        raise SystemExit(f"{label}: {section} {key} is already in another template")
    facts[section][key] = value


def read(path, facts):
    label = os.path.basename(path)
    with open(path) as f:
        template = yaml.load(f, Loader=Loader)
    facts["templates"].append(label)
    for logical_id, resource in template["Resources"].items():
        if logical_id.startswith(FOREACH):
            continue
        kind = resource.get("Type")
        properties = resource.get("Properties", {})
        if kind == "AWS::Serverless::Function":
            binary = resource["Metadata"]["BuildProperties"]["Binary"]
            merge_unique(facts, "actions", binary, actions_of(properties.get("Policies")), label)
            variables = properties.get("Environment", {}).get("Variables", {})
            merge_unique(facts, "environment", binary, sorted(variables), label)
        elif kind == "AWS::IoT::ProvisioningTemplate":
            body = sub_text(properties["TemplateBody"])
            merge_unique(facts, "provisioningTemplates", logical_id, body, label)
        elif kind == "AWS::IoT::CACertificate":
            body = sub_text(properties["RegistrationConfig"]["TemplateBody"])
            merge_unique(facts, "provisioningTemplates", logical_id, body, label)
    facts["healthResources"] += health_resources(label, template, template["Resources"])
    check_policies(label, template, facts)


def main(paths):
    facts = {
        "templates": [],
        "actions": {},
        "environment": {},
        "provisioningTemplates": {},
        "healthResources": [],
        "policyStatements": 0,
        "policyProblems": [],
    }
    for path in paths:
        read(path, facts)
    json.dump(facts, sys.stdout, indent=2, sort_keys=True)


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    default = [os.path.join(root, name) for name in ("template.yaml", "global.yaml")]
    main(sys.argv[1:] or default)
