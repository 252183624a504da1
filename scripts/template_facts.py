"""Facts of template.yaml for the tests, as JSON on stdout.

- "actions": for each function (by its BuildProperties.Binary), every IAM
  action its policies grant;
- "provisioningTemplates": the provisioning template bodies (the fleet
  template and the JITP registration template) with their !Sub variables
  filled in, as JSON text;
- "environment": for each function, the names of its environment variables.

CloudFormation's short tags (!Ref, !Sub, ...) are read as {"Fn::X": value}.
"""
import json
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


def actions_of(policies):
    granted = set()
    for policy in policies or []:
        if not isinstance(policy, dict):
            continue
        for statement in policy.get("Statement", []):
            if statement.get("Effect") != "Allow":
                continue
            action = statement.get("Action", [])
            granted.update([action] if isinstance(action, str) else action)
    return sorted(granted)


def sub_text(value):
    """The text of a !Sub whose variables are filled with placeholders."""
    sub = value["Fn::Sub"]
    text, variables = (sub, {}) if isinstance(sub, str) else (sub[0], sub[1])
    for name in variables:
        text = text.replace("${" + name + "}", f"geoprov-{name}")
    return text


def main(path):
    with open(path) as f:
        template = yaml.load(f, Loader=Loader)
    facts = {"actions": {}, "environment": {}, "provisioningTemplates": {}}
    for logical_id, resource in template["Resources"].items():
        if logical_id.startswith("Fn::ForEach::"):
            continue
        kind = resource.get("Type")
        properties = resource.get("Properties", {})
        if kind == "AWS::Serverless::Function":
            binary = resource["Metadata"]["BuildProperties"]["Binary"]
            facts["actions"][binary] = actions_of(properties.get("Policies"))
            variables = properties.get("Environment", {}).get("Variables", {})
            facts["environment"][binary] = sorted(variables)
        elif kind == "AWS::IoT::ProvisioningTemplate":
            facts["provisioningTemplates"][logical_id] = sub_text(properties["TemplateBody"])
        elif kind == "AWS::IoT::CACertificate":
            body = properties["RegistrationConfig"]["TemplateBody"]
            facts["provisioningTemplates"][logical_id] = sub_text(body)
    json.dump(facts, sys.stdout, indent=2, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml")
